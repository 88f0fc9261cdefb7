"""The lab's lifecycle: ``up``, ``status`` and ``down`` on real OVS and namespaces.

Every test builds labs of names of its own (``lab_name``), never the default lab, so a
lab that someone works in is left alone; the ``name`` and ``names`` fixtures remove the
test's labs at the end, whatever happened. Two labs run side by side in one test.

The tests with the real gateway app skip until ``ryu_apps/nat_gateway.py`` exists; the
ones with a stand-in app (written to a temporary directory) check the lab itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ryu_apps import switch
from tests.e2e.gateway_lab import lab_name
from topo import lab
from topo.lab import ovs
from topo.netns import ping

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
    from ryu_apps.framework import (
        CONFIG_DISPATCHER, App, cfg, ofp_event, ofproto_v1_3, set_ev_cls)

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


    class StandIn(App):
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
    from ryu_apps.framework import CONFIG_DISPATCHER, App, ofp_event, ofproto_v1_3, set_ev_cls


    class Silent(App):
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
    return lab.GATEWAY_COMMAND.encode() in cmdline and stat.rpartition(")")[2].split()[0] != "Z"


def listeners(port: int) -> list[str]:
    """The local addresses of the TCP sockets that listen on ``port``."""
    return [line.split()[3] for line in sh("ss", "-Hltn", f"sport = :{port}").splitlines()]


@pytest.fixture
def names() -> Iterator[Callable[[], str]]:
    """A factory of lab names; every lab of those names is removed at the end."""
    made: list[str] = []

    def new() -> str:
        made.append(lab_name())
        return made[-1]

    try:
        yield new
    finally:
        for name in made:
            lab.down(name=name, purge=True)


@pytest.fixture
def name(names: Callable[[], str]) -> str:
    """One lab name of the test's own."""
    return names()


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    path = tmp_path / "stand_in_gateway.py"
    path.write_text(STAND_IN_APP)
    return path


def check_lab_is_up(state: lab.LabState, clients: int) -> None:
    """Everything that `up` promises, read back from the system."""
    name = state.name
    bridge = f"br-{name}"
    names = [f"{name}-c{i}" for i in range(1, clients + 1)]
    assert state.namespaces == [*names, f"{name}-srv"]
    assert set(state.namespaces) <= namespaces()
    expected_ports = {f"{name}-c{i}": i for i in range(1, clients + 1)} | {f"{name}-srv": 100}
    assert state.ports == expected_ports
    for port, ofport in expected_ports.items():
        assert sh("ovs-vsctl", "get", "interface", port, "ofport") == str(ofport)
    assert state.bridge == bridge
    assert sh("ovs-vsctl", "get", "bridge", bridge, "datapath_type") == "netdev"
    assert sh("ovs-vsctl", "get", "bridge", bridge, "fail_mode") == "secure"
    protocols = sh("ovs-vsctl", "get", "bridge", bridge, "protocols")
    assert protocols.replace('"', "") == "[OpenFlow13]"
    assert sh("ovs-vsctl", "get", "bridge", bridge,
              "other-config:disable-in-band") == '"true"'
    assert sh("ovs-vsctl", "get", "bridge", bridge, "datapath_id") == (
        f'"{state.datapath_id:016x}"')
    assert state.datapath_id == lab.datapath_id(name) != lab.DEFAULT_DATAPATH_ID
    assert state.openflow_port not in (0, switch.OPENFLOW_PORT, switch.REST_PORT)
    assert state.rest_port not in (0, switch.OPENFLOW_PORT, switch.REST_PORT, state.openflow_port)
    assert sh("ovs-vsctl", "get", "controller", bridge, "target") == (
        f'"tcp:127.0.0.1:{state.openflow_port}"')
    assert listeners(state.openflow_port) == [f"127.0.0.1:{state.openflow_port}"]
    assert sh("ovs-vsctl", "get", "controller", bridge, "is_connected") == "true"
    flows = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge,
               "cookie=0x5001000000000000/0xffff000000000000")
    assert "cookie=0x5001" in flows
    for i, ns in enumerate(names, start=1):
        assert f"192.168.1.{i}/24" in sh("ip", "-n", ns, "-br", "addr", "show", "eth0")
        assert sh("ip", "-n", ns, "route", "show", "default").startswith(
            "default via 192.168.1.254 dev eth0")
    assert "203.0.113.1/24" in sh("ip", "-n", f"{name}-srv", "-br", "addr", "show", "eth0")
    assert sh("ip", "-n", f"{name}-srv", "route", "show", "default") == ""
    for ns in state.namespaces:
        offload = sh("ip", "netns", "exec", ns, "ethtool", "-k", "eth0")
        assert "tx-checksumming: off" in offload
        assert "UP" in sh("ip", "-n", ns, "-br", "link", "show", "lo")
    folder = Path(f"/run/pptp-alg-lab-{name}")
    assert Path(state.run_dir) == folder
    assert state.controller_pid is not None and controller_runs(state.controller_pid)
    assert (folder / "ryu.pid").read_text().strip() == str(state.controller_pid)
    assert state.rest_url == f"http://127.0.0.1:{state.rest_port}"
    assert state.phase == "up"
    recorded = json.loads((folder / "lab.json").read_text())
    assert recorded["controller_pid"] == state.controller_pid
    assert recorded["ports"] == expected_ports
    assert lab.LabState.from_dict(recorded) == state
    assert lab.status(name=name) == state
    assert cli("status", "--name", name).returncode == 0


def check_lab_is_gone(name: str, pid: int | None) -> None:
    assert not {ns for ns in namespaces() if ns.startswith(f"{name}-")}
    assert f"br-{name}" not in sh("ovs-vsctl", "list-br").split()
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(f"{name}-")]
    assert pid is None or not controller_runs(pid)
    assert not (lab.run_dir(name) / "lab.json").exists()
    assert lab.status(name=name) is None
    assert cli("status", "--name", name).returncode == 3


def check_pings_through_its_gateway(state: lab.LabState, client: int) -> None:
    """Client ``client`` pings the server through the lab's NAT, and only that lab's app
    sees it: its REST shows the echo session from that client's address alone."""
    assert ping(state.client(client), state.server_ip, count=2), (
        f"{state.client(client)} cannot ping the server through lab {state.name}")
    with urllib.request.urlopen(state.rest_url + "/pptp-alg/sessions", timeout=5) as resp:
        sessions = json.loads(resp.read())
    icmp = {(s["inside"].split(":")[0], s["public"].split(":")[0], s["remote"].split(":")[0])
            for s in sessions if s["proto"] == "icmp"}
    assert icmp == {(lab.client_address(client), state.public_ips[0], state.server_ip)}, sessions


# ----------------------------------------------------------------- with a stand-in app


def test_lifecycle_with_stand_in_app(name: str, stand_in: Path) -> None:
    state = lab.up(3, policy="strict", public_ips=2, alg=False, app=stand_in, name=name)
    check_lab_is_up(state, 3)
    assert state.public_ips == ["203.0.113.2", "203.0.113.3"]
    # The app read the [nat] options through oslo.config.
    log = Path(state.log_path).read_text()
    assert repr((
        [f"{name}-c1", f"{name}-c2", f"{name}-c3"], f"{name}-srv", "192.168.1.0/24",
        "192.168.1.254", "203.0.113.0/24", ["203.0.113.2", "203.0.113.3"], None, "strict",
        False, f"br-{name}",
    )) in log
    lab.down(name=name)
    check_lab_is_gone(name, state.controller_pid)
    lab.down(name=name)  # nothing left: still fine


def test_up_replaces_a_running_lab(name: str, stand_in: Path) -> None:
    first = lab.up(3, app=stand_in, name=name)
    second = lab.up(1, app=stand_in, name=name, replace=True)
    assert first.controller_pid != second.controller_pid
    assert first.controller_pid is not None and not controller_runs(first.controller_pid)
    assert not {f"{name}-c2", f"{name}-c3"} & namespaces()
    check_lab_is_up(second, 1)


def test_up_times_out_with_the_log_and_down_cleans(name: str, tmp_path: Path) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text(SILENT_APP)
    with pytest.raises(lab.LabError, match="SILENT-APP connected"):
        lab.up(2, app=silent, timeout=5, name=name)
    recorded = lab.read_state(name)
    assert recorded is not None and recorded.phase == "starting"
    assert lab.status(name=name) is None
    assert cli("status", "--name", name).returncode == 3
    with pytest.raises(lab.LabError, match=f"lab {name} is not up, but parts of it exist"):
        lab.up(2, app=silent, timeout=5, name=name)
    lab.down(name=name)
    check_lab_is_gone(name, recorded.controller_pid)


def test_down_without_state_file(name: str, stand_in: Path) -> None:
    state = lab.up(2, app=stand_in, name=name)
    Path(state.state_path).unlink()
    lab.down(name=name)
    check_lab_is_gone(name, state.controller_pid)


def test_cli_lifecycle_with_stand_in_app(name: str, stand_in: Path) -> None:
    up = cli("up", "--name", name, "--clients", "2", "--public-ips", "3", "--app",
             str(stand_in))
    assert up.returncode == 0, up.stderr
    assert "lab: up" in up.stdout
    status = cli("status", "--name", name)
    assert status.returncode == 0, status.stdout
    assert f"{name}-c2 (OpenFlow port 2)" in status.stdout
    assert str(lab.run_dir(name) / "ryu.log") in status.stdout
    config = (lab.run_dir(name) / "gateway.conf").read_text()
    assert "public_ips = 203.0.113.2,203.0.113.3,203.0.113.4" in config
    assert name in cli("list").stdout
    assert cli("down", "--name", name).returncode == 0
    assert cli("down", "--name", name).returncode == 0
    assert cli("status", "--name", name).returncode == 3


# ----------------------------------------------------------------- with the real app


@needs_app
def test_lifecycle_with_the_gateway_app(name: str) -> None:
    state = lab.up(3, policy="open", public_ips=1, alg=True, name=name)
    assert Path(state.app) == APP
    check_lab_is_up(state, 3)
    assert listeners(state.rest_port) == [f"127.0.0.1:{state.rest_port}"]
    assert Path(state.config_path).read_text() == lab.render_config(state)
    # The app gave the lab's zone of the connection tracker a timeout policy; down
    # takes it away with the rest.
    from topo.lab.state import lab_zone

    zone = f"Zone:{lab_zone(name)},"
    assert zone in ovs.vsctl("list-zone-tp", "netdev")
    lab.down(name=name)
    check_lab_is_gone(name, state.controller_pid)
    assert zone not in ovs.vsctl("list-zone-tp", "netdev")
    lab.down(name=name)


@needs_app
def test_gateway_app_up_twice_and_strict_without_alg(name: str) -> None:
    first = lab.up(2, name=name)
    second = lab.up(2, policy="strict", public_ips=2, alg=False, name=name, replace=True)
    assert first.controller_pid is not None and not controller_runs(first.controller_pid)
    check_lab_is_up(second, 2)
    config = Path(second.config_path).read_text()
    assert "policy = strict" in config and "alg = false" in config


@needs_app
def test_gateway_app_cli(name: str) -> None:
    up = cli("up", "--name", name, "--clients", "2")
    assert up.returncode == 0, up.stderr
    assert cli("status", "--name", name).returncode == 0
    assert cli("down", "--name", name).returncode == 0
    assert cli("status", "--name", name).returncode == 3


@needs_app
def test_two_labs_side_by_side(names: Callable[[], str]) -> None:
    """Two labs pass traffic at once, each through its own gateway; `up` of a lab that is
    up is refused, `replace` replaces it alone, and `down` of one leaves the other up."""
    a_name, b_name = names(), names()
    a = lab.up(1, name=a_name)
    b = lab.up(2, name=b_name)
    assert lab.status(name=a_name) == a
    assert {a.openflow_port, a.rest_port}.isdisjoint({b.openflow_port, b.rest_port})
    assert (a.bridge, a.datapath_id, a.run_dir) != (b.bridge, b.datapath_id, b.run_dir)
    assert set(a.namespaces).isdisjoint(b.namespaces)
    check_lab_is_up(a, 1)
    check_lab_is_up(b, 2)
    assert {a_name, b_name} <= set(lab.labs())
    check_pings_through_its_gateway(a, 1)
    check_pings_through_its_gateway(b, 2)

    with pytest.raises(lab.LabError, match=f"lab {a_name} is up.*--replace"):
        lab.up(1, name=a_name)
    refused = cli("up", "--name", a_name, "--clients", "1")
    assert refused.returncode == 1
    assert f"lab {a_name} is up" in refused.stderr and "--replace" in refused.stderr
    assert lab.status(name=a_name) == a

    replaced = lab.up(1, name=a_name, replace=True)
    assert a.controller_pid is not None and not controller_runs(a.controller_pid)
    assert replaced.controller_pid != a.controller_pid
    check_lab_is_up(replaced, 1)
    assert lab.status(name=b_name) == b
    check_pings_through_its_gateway(replaced, 1)

    lab.down(name=a_name)
    check_lab_is_gone(a_name, replaced.controller_pid)
    assert lab.status(name=b_name) == b
    check_lab_is_up(b, 2)
    check_pings_through_its_gateway(b, 2)


# ----------------------------------------------------------------- several bridges


def zone_policies() -> str:
    return sh("ovs-vsctl", "list-zone-tp", "netdev")


def check_bridges_are_up(state: lab.LabState, clients: int) -> None:
    """Every gateway of a lab of several bridges is what `up` promises, read back."""
    name = state.name
    assert [g.name for g in state.all_gateways] == [f"g{j}" for j in
                                                    range(1, state.bridges + 1)]
    for gateway in state.all_gateways:
        j = gateway.number
        host = "" if j == 1 else f"g{j}"
        port = "" if j == 1 else str(j)
        bridge = f"br-{name}" if j == 1 else f"br-{name}-{j}"
        assert gateway.bridge == bridge
        assert gateway.namespaces == [*(f"{name}-{host}c{i}" for i in range(1, clients + 1)),
                                      f"{name}-{host}srv"]
        assert set(gateway.namespaces) <= namespaces()
        expected_ports = {f"{name}-{port}c{i}": i for i in range(1, clients + 1)} | {
            f"{name}-{port}srv": 100}
        assert gateway.ports == expected_ports
        for ifname, ofport in expected_ports.items():
            assert sh("ovs-vsctl", "get", "interface", ifname, "ofport") == str(ofport)
        assert sh("ovs-vsctl", "get", "bridge", bridge, "datapath_type") == "netdev"
        assert sh("ovs-vsctl", "get", "bridge", bridge, "datapath_id") == (
            f'"{lab.datapath_id(name, j):016x}"')
        assert sh("ovs-vsctl", "get", "controller", bridge, "target") == (
            f'"tcp:127.0.0.1:{state.openflow_port}"')
        assert sh("ovs-vsctl", "get", "controller", bridge, "is_connected") == "true"
        assert "cookie=0x5001" in sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge,
                                     "cookie=0x5001000000000000/0xffff000000000000")
        for i, ns in enumerate(gateway.client_namespaces, start=1):
            assert f"192.168.1.{i}/24" in sh("ip", "-n", ns, "-br", "addr", "show", "eth0")
        assert "203.0.113.1/24" in sh("ip", "-n", gateway.server_namespace, "-br", "addr",
                                      "show", "eth0")
    assert len({g.datapath_id for g in state.all_gateways}) == state.bridges
    assert len({g.ct_zone for g in state.all_gateways}) == state.bridges
    assert listeners(state.openflow_port) == [f"127.0.0.1:{state.openflow_port}"]
    recorded = json.loads(Path(state.state_path).read_text())
    assert [g["bridge"] for g in recorded["gateways"]] == [
        g.bridge for g in state.all_gateways]
    assert lab.LabState.from_dict(recorded) == state
    assert lab.status(name=name) == state


def check_bridges_are_gone(name: str, bridges: int) -> None:
    check_lab_is_gone(name, None)
    assert not {f"br-{name}-{j}" for j in range(2, bridges + 1)} & set(
        sh("ovs-vsctl", "list-br").split())


def test_two_bridges_with_stand_in_app(name: str, stand_in: Path) -> None:
    """`up --bridges 2`: one controller, two bridges with the same addresses behind each,
    both reported by `status`; `down` leaves nothing of either, zones' policies
    included."""
    state = lab.up(2, app=stand_in, name=name, bridges=2)
    check_bridges_are_up(state, 2)
    # One controller process for both bridges, and the app's configuration names both.
    assert state.controller_pid is not None and controller_runs(state.controller_pid)
    config = Path(state.config_path).read_text()
    assert "[gateway:g1]" in config and "[gateway:g2]" in config
    assert f"bridge = br-{name}-2\n" in config and f"gre_demux_port = {name}-2dmx\n" in config
    for gateway in state.all_gateways:
        assert sh("ovs-vsctl", "get", "interface", gateway.gre_demux_port, "ofport") == "99"
    status = cli("status", "--name", name)
    assert status.returncode == 0, status.stdout
    for bridge in (f"br-{name}", f"br-{name}-2"):
        assert f"bridge {bridge} " in status.stdout
        assert re.search(rf"bridge {bridge} \(.*\): controller .* connected, [1-9]\d* pipeline",
                         status.stdout), status.stdout
    assert f"{name}-g2c2 " in status.stdout and f"{name}-2c2 (OpenFlow port 2)" in status.stdout
    one = cli("status", "--name", name, "--gateway", "g2")
    assert one.returncode == 0, one.stdout
    assert f"bridge br-{name}-2 " in one.stdout and f"bridge br-{name} " not in one.stdout
    assert cli("status", "--name", name, "--gateway", "g3").returncode == 1
    # The app would give each gateway's zone a policy: down removes every one.
    zones = [g.ct_zone for g in state.all_gateways]
    for zone in zones:
        sh("ovs-vsctl", "add-zone-tp", "netdev", f"zone={zone}", "tcp_close=7")
    assert all(f"Zone:{zone}," in zone_policies() for zone in zones)
    lab.down(name=name)
    check_bridges_are_gone(name, 2)
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(f"{name}-")]
    policies = zone_policies()
    assert not [zone for zone in zones if f"Zone:{zone}," in policies], policies
    assert state.controller_pid is not None and not controller_runs(state.controller_pid)


def test_cli_bridges_restart_switch_of_one_gateway_and_down_without_state(
    name: str, stand_in: Path
) -> None:
    up = cli("up", "--name", name, "--clients", "1", "--bridges", "3", "--no-gre-demux",
             "--app", str(stand_in))
    assert up.returncode == 0, up.stderr
    state = lab.read_state(name)
    assert state is not None and state.bridges == 3
    check_bridges_are_up(state, 1)
    started = time.monotonic()
    restarted = cli("restart-switch", "--name", name, "--gateway", "g2")
    assert restarted.returncode == 0, restarted.stderr
    after = {g.bridge: ovs.pipeline_ages(g.bridge) for g in state.all_gateways}
    took = time.monotonic() - started
    # g2's pipeline was put back during the restart; the others' flows are older.
    assert max(after[f"br-{name}-2"]) < took, (after, took)
    for bridge in (f"br-{name}", f"br-{name}-3"):
        assert min(after[bridge]) > took, (after, took)
    assert lab.status(name=name) is not None
    Path(state.state_path).unlink()
    assert cli("down", "--name", name).returncode == 0
    check_bridges_are_gone(name, 3)
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(f"{name}-")]
