"""The lab's lifecycle: ``up``, ``status`` and ``down`` on real OVS and namespaces.

These tests own the lab: they use its fixed names (``c1`` .., ``srv``, ``br-lab``,
``/run/pptp-alg-lab``) and ports (6653, 8080), so they replace a lab that someone left
running, and remove it at the end.

The tests with the real gateway app skip until ``ryu_apps/nat_gateway.py`` exists; the
ones with a stand-in app (written to a temporary directory) check the lab itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from topo import lab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "ryu_apps" / "nat_gateway.py"
needs_app = pytest.mark.skipif(
    not APP.exists(), reason="the gateway app is not in this tree yet")

#: A Ryu app with the real app's contract: it registers the ``[nat]`` options and, on
#: switch features, installs one flow with the pipeline cookie.
STAND_IN_APP = textwrap.dedent('''
    from ryu import cfg
    from ryu.base import app_manager
    from ryu.controller import ofp_event
    from ryu.controller.handler import CONFIG_DISPATCHER, set_ev_cls
    from ryu.ofproto import ofproto_v1_3

    cfg.CONF.register_opts([
        cfg.ListOpt("inside_ports", default=[]),
        cfg.StrOpt("outside_port"),
        cfg.StrOpt("inside_subnet"),
        cfg.StrOpt("inside_gateway"),
        cfg.StrOpt("outside_subnet"),
        cfg.ListOpt("public_ips", default=[]),
        cfg.StrOpt("next_hop"),
        cfg.StrOpt("policy", choices=["open", "strict"]),
        cfg.BoolOpt("alg", default=True),
        cfg.StrOpt("bridge"),
    ], group="nat")


    class StandIn(app_manager.RyuApp):
        OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            nat = cfg.CONF.nat
            self.logger.info("NAT-CONFIG %s", repr((
                list(nat.inside_ports), nat.outside_port, nat.inside_subnet,
                nat.inside_gateway, nat.outside_subnet, list(nat.public_ips),
                nat.next_hop, nat.policy, nat.alg, nat.bridge)))

        @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
        def features(self, ev):
            dp = ev.msg.datapath
            parser = dp.ofproto_parser
            dp.send_msg(parser.OFPFlowMod(
                datapath=dp, cookie=0x5001000000000000, priority=0,
                match=parser.OFPMatch(), instructions=[]))
''')

#: Connects, but never installs the pipeline.
SILENT_APP = textwrap.dedent('''
    from ryu.base import app_manager
    from ryu.controller import ofp_event
    from ryu.controller.handler import CONFIG_DISPATCHER, set_ev_cls
    from ryu.ofproto import ofproto_v1_3


    class Silent(app_manager.RyuApp):
        OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

        @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
        def features(self, ev):
            self.logger.info("SILENT-APP connected, installing nothing")
''')


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr}")
    return proc.stdout.strip()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topo.lab", *args], cwd=REPO, capture_output=True,
        text=True, timeout=120)


def namespaces() -> set[str]:
    return {line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line}


def controller_runs(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return b"ryu-manager" in cmdline and stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def clean_lab() -> Iterator[None]:
    lab.down()
    try:
        yield
    finally:
        lab.down()


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    path = tmp_path / "stand_in_gateway.py"
    path.write_text(STAND_IN_APP)
    return path


def check_lab_is_up(state: lab.LabState, clients: int) -> None:
    """Everything that `up` promises, read back from the system."""
    names = [f"c{i}" for i in range(1, clients + 1)]
    assert state.namespaces == [*names, "srv"]
    assert set(state.namespaces) <= namespaces()
    expected_ports = {f"lab-c{i}": i for i in range(1, clients + 1)} | {"lab-srv": 100}
    assert state.ports == expected_ports
    for port, ofport in expected_ports.items():
        assert sh("ovs-vsctl", "get", "interface", port, "ofport") == str(ofport)
    assert sh("ovs-vsctl", "get", "bridge", "br-lab", "datapath_type") == "netdev"
    assert sh("ovs-vsctl", "get", "bridge", "br-lab", "fail_mode") == "secure"
    protocols = sh("ovs-vsctl", "get", "bridge", "br-lab", "protocols")
    assert protocols.replace('"', "") == "[OpenFlow13]"
    assert sh("ovs-vsctl", "get", "bridge", "br-lab",
              "other-config:disable-in-band") == '"true"'
    assert sh("ovs-vsctl", "get", "controller", "br-lab", "target") == '"tcp:127.0.0.1:6653"'
    assert sh("ovs-vsctl", "get", "controller", "br-lab", "is_connected") == "true"
    flows = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-lab",
               "cookie=0x5001000000000000/0xffff000000000000")
    assert "cookie=0x5001" in flows
    for i, name in enumerate(names, start=1):
        assert f"192.168.1.{i}/24" in sh("ip", "-n", name, "-br", "addr", "show", "eth0")
        assert sh("ip", "-n", name, "route", "show", "default").startswith(
            "default via 192.168.1.254 dev eth0")
    assert "203.0.113.1/24" in sh("ip", "-n", "srv", "-br", "addr", "show", "eth0")
    assert sh("ip", "-n", "srv", "route", "show", "default") == ""
    for name in state.namespaces:
        offload = sh("ip", "netns", "exec", name, "ethtool", "-k", "eth0")
        assert "tx-checksumming: off" in offload
        assert "UP" in sh("ip", "-n", name, "-br", "link", "show", "lo")
    assert state.controller_pid is not None and controller_runs(state.controller_pid)
    assert Path(lab.PID_PATH).read_text().strip() == str(state.controller_pid)
    assert state.rest_url == "http://127.0.0.1:8080"
    assert state.phase == "up"
    recorded = json.loads(Path(lab.STATE_PATH).read_text())
    assert recorded["controller_pid"] == state.controller_pid
    assert recorded["ports"] == expected_ports
    assert lab.LabState.from_dict(recorded) == state
    assert lab.status() == state
    assert cli("status").returncode == 0


def check_lab_is_gone(pid: int | None) -> None:
    assert not ({"srv"} | {f"c{i}" for i in range(1, 65)}) & namespaces()
    assert "br-lab" not in sh("ovs-vsctl", "list-br").split()
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith("lab-")]
    assert pid is None or not controller_runs(pid)
    assert not Path(lab.STATE_PATH).exists()
    assert lab.status() is None
    assert cli("status").returncode == 3


# ----------------------------------------------------------------- with a stand-in app


@pytest.mark.usefixtures("clean_lab")
def test_lifecycle_with_stand_in_app(stand_in: Path) -> None:
    state = lab.up(3, policy="strict", public_ips=2, alg=False, app=stand_in)
    check_lab_is_up(state, 3)
    assert state.public_ips == ["203.0.113.2", "203.0.113.3"]
    # The app read the [nat] options through oslo.config.
    log = Path(lab.LOG_PATH).read_text()
    assert repr((
        ["lab-c1", "lab-c2", "lab-c3"], "lab-srv", "192.168.1.0/24", "192.168.1.254",
        "203.0.113.0/24", ["203.0.113.2", "203.0.113.3"], None, "strict", False, "br-lab",
    )) in log
    lab.down()
    check_lab_is_gone(state.controller_pid)
    lab.down()  # nothing left: still fine


@pytest.mark.usefixtures("clean_lab")
def test_up_replaces_a_running_lab(stand_in: Path) -> None:
    first = lab.up(3, app=stand_in)
    second = lab.up(1, app=stand_in)
    assert first.controller_pid != second.controller_pid
    assert first.controller_pid is not None and not controller_runs(first.controller_pid)
    assert not {"c2", "c3"} & namespaces()
    check_lab_is_up(second, 1)


@pytest.mark.usefixtures("clean_lab")
def test_up_times_out_with_the_log_and_down_cleans(tmp_path: Path) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text(SILENT_APP)
    with pytest.raises(lab.LabError, match="SILENT-APP connected"):
        lab.up(2, app=silent, timeout=5)
    recorded = lab.read_state()
    assert recorded is not None and recorded.phase == "starting"
    assert lab.status() is None
    assert cli("status").returncode == 3
    lab.down()
    check_lab_is_gone(recorded.controller_pid)


@pytest.mark.usefixtures("clean_lab")
def test_down_without_state_file(stand_in: Path) -> None:
    state = lab.up(2, app=stand_in)
    Path(lab.STATE_PATH).unlink()
    lab.down()
    check_lab_is_gone(state.controller_pid)


@pytest.mark.usefixtures("clean_lab")
def test_cli_lifecycle_with_stand_in_app(stand_in: Path) -> None:
    up = cli("up", "--clients", "2", "--public-ips", "3", "--app", str(stand_in))
    assert up.returncode == 0, up.stderr
    assert "lab: up" in up.stdout
    status = cli("status")
    assert status.returncode == 0, status.stdout
    assert "lab-c2 (OpenFlow port 2)" in status.stdout
    assert str(lab.LOG_PATH) in status.stdout
    config = Path(lab.CONFIG_PATH).read_text()
    assert "public_ips = 203.0.113.2,203.0.113.3,203.0.113.4" in config
    assert cli("down").returncode == 0
    assert cli("down").returncode == 0
    assert cli("status").returncode == 3


# ----------------------------------------------------------------- with the real app


@needs_app
@pytest.mark.usefixtures("clean_lab")
def test_lifecycle_with_the_gateway_app() -> None:
    state = lab.up(3, policy="open", public_ips=1, alg=True)
    assert Path(state.app) == APP
    check_lab_is_up(state, 3)
    assert Path(lab.CONFIG_PATH).read_text() == lab.render_config(state)
    lab.down()
    check_lab_is_gone(state.controller_pid)
    lab.down()


@needs_app
@pytest.mark.usefixtures("clean_lab")
def test_gateway_app_up_twice_and_strict_without_alg() -> None:
    first = lab.up(2)
    second = lab.up(2, policy="strict", public_ips=2, alg=False)
    assert first.controller_pid is not None and not controller_runs(first.controller_pid)
    check_lab_is_up(second, 2)
    config = Path(lab.CONFIG_PATH).read_text()
    assert "policy = strict" in config and "alg = false" in config


@needs_app
@pytest.mark.usefixtures("clean_lab")
def test_gateway_app_cli() -> None:
    up = cli("up", "--clients", "2")
    assert up.returncode == 0, up.stderr
    assert cli("status").returncode == 0
    assert cli("down").returncode == 0
    assert cli("status").returncode == 3
