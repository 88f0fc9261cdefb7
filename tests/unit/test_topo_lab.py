"""The lab's pure parts: its names, plan, the app's configuration, the state file, Mininet.

The restarts are checked here with OVS and pptp-alg-gateway replaced by recorders (the lab's
folder is a temporary one); ``tests/e2e/test_lab_restart.py`` runs them for real.
"""

from __future__ import annotations

import configparser
import itertools
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from alg.config import load, load_gateways
from alg.errors import ConfigError
from alg.events import EntryKind
from ryu_apps import switch
from topo import lab, mininet_lab, netns
from topo.lab import controller, health, names, ovs, restarts
from topo.lab.state import lab_zone
from topo.netns import CommandError


def test_plan_names_addresses_and_ports() -> None:
    state = lab.plan(3, policy="strict", public_ips=2, alg=False)
    assert state.namespaces == ["c1", "c2", "c3", "srv"]
    assert state.addresses == {
        "c1": "192.168.1.1", "c2": "192.168.1.2", "c3": "192.168.1.3", "srv": "203.0.113.1"}
    assert state.ports == {"lab-c1": 1, "lab-c2": 2, "lab-c3": 3, "lab-srv": 100}
    assert state.namespace_ports["srv"] == "lab-srv"
    assert state.inside_ports == ["lab-c1", "lab-c2", "lab-c3"]
    assert state.outside_port == "lab-srv"
    assert state.public_ips == ["203.0.113.2", "203.0.113.3"]
    assert state.client_namespaces == ["c1", "c2", "c3"]
    assert state.server_ip == "203.0.113.1"
    assert state.app == str(lab.REPO / "ryu_apps" / "nat_gateway.py")
    assert all(len(name) <= 15 for name in lab.plan(64).ports)


def test_plan_takes_a_framework() -> None:
    assert lab.plan(1).framework == "ryu"
    assert lab.plan(1, framework="os-ken").framework == "os-ken"
    with pytest.raises(ValueError):
        lab.plan(1, framework="pox")


@pytest.mark.parametrize(
    ("clients", "policy", "public_ips"),
    [(0, "open", 1), (65, "open", 1), (1, "closed", 1), (1, "open", 0), (1, "open", 254)],
)
def test_plan_rejects_bad_arguments(clients: int, policy: str, public_ips: int) -> None:
    with pytest.raises(ValueError):
        lab.plan(clients, policy=policy, public_ips=public_ips)


def test_config_file_has_exactly_the_nat_options() -> None:
    text = lab.render_config(lab.plan(2, policy="strict", public_ips=3, alg=False))
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert parser.sections() == ["nat"]
    assert dict(parser["nat"]) == {
        "inside_ports": "lab-c1,lab-c2",
        "outside_port": "lab-srv",
        "inside_subnet": "192.168.1.0/24",
        "inside_gateway": "192.168.1.254",
        "outside_subnet": "203.0.113.0/24",
        "public_ips": "203.0.113.2,203.0.113.3,203.0.113.4",
        "policy": "strict",
        "alg": "false",
        "bridge": "br-lab",
        "state_file": "/run/pptp-alg-lab/gateway-state.sqlite",
        "rest_host": "127.0.0.1",
        "rest_port": str(switch.REST_PORT),
        "ct_zone": str(lab_zone("lab")),
    }


def test_each_lab_keeps_to_a_connection_tracker_zone_of_its_own() -> None:
    zones = {lab_zone(name) for name in ("lab", "t1", "t2", "t3", "bench")}
    assert len(zones) == 5 and all(1000 <= z <= 60999 for z in zones)
    given = lab.plan(1, name="t9")
    given.options["ct_zone"] = "77"
    assert "ct_zone = 77" in lab.render_config(given).splitlines()


def test_config_file_is_what_the_app_loads() -> None:
    text = lab.render_config(lab.plan(2, policy="strict", public_ips=3, alg=False))
    parser = configparser.ConfigParser()
    parser.read_string(text)
    config = load(dict(parser["nat"]))
    assert config.inside_ports == ("lab-c1", "lab-c2") and not config.alg.alg_enabled
    assert len(config.alg.public_ips) == 3 and config.alg.policy == "strict"


def test_a_state_the_app_would_refuse_is_refused_before_the_file_is_written() -> None:
    state = lab.plan(2)
    state.inside_gateway = "10.0.0.1"
    with pytest.raises(ConfigError) as info:
        lab.render_config(state)
    assert info.value.key == "nat.inside_gateway"


def test_more_options_reach_the_config_file_and_bad_ones_are_refused() -> None:
    text = lab.render_config(lab.plan(1, options={"call_id_hold_down": "3"}))
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert load(dict(parser["nat"])).alg.call_id_hold_down == 3.0
    with pytest.raises(ConfigError) as info:
        lab.plan(1, options={"gre_idle": "0"})
    assert info.value.key == "nat.gre_idle"
    with pytest.raises(ConfigError) as info:
        lab.plan(1, options={"colour": "blue"})
    assert info.value.key == "nat.colour"


def test_state_round_trips_through_json() -> None:
    state = lab.plan(2)
    state.controller_pid = 1234
    state.phase = "up"
    data = json.loads(json.dumps(state.to_dict()))
    assert lab.LabState.from_dict(data) == state
    data["future_field"] = 1
    assert lab.LabState.from_dict(data).extra == {"future_field": 1}


def test_mininet_topology_matches_the_lab() -> None:
    topo = mininet_lab.topos["pptplab"](2)
    if mininet_lab.HAVE_MININET:  # pragma: no cover - Mininet is not a dependency
        pytest.skip("checks the stand-in layout only")
    assert topo.switch_names == ["br-lab"]
    assert topo.nodes["c2"]["ip"] == "192.168.1.2/24"
    assert topo.nodes["c2"]["defaultRoute"] == "via 192.168.1.254"
    assert topo.nodes["srv"]["ip"] == "203.0.113.1/24"
    assert [(a, opts["port2"], opts["intfName2"]) for a, _, opts in topo.links] == [
        ("c1", 1, "lab-c1"), ("c2", 2, "lab-c2"), ("srv", 100, "lab-srv")]


def test_the_default_lab_keeps_its_fixed_names_ports_and_folder() -> None:
    state = lab.plan(2)
    assert state.name == lab.DEFAULT_NAME == "lab"
    assert state.bridge == "br-lab"
    assert state.server_namespace == "srv"
    assert state.datapath_id == 1
    assert (state.openflow_port, state.rest_port) == (switch.OPENFLOW_PORT, switch.REST_PORT)
    assert state.controller == f"tcp:127.0.0.1:{switch.OPENFLOW_PORT}"
    assert state.rest_url == f"http://127.0.0.1:{switch.REST_PORT}"
    assert state.run_dir == "/run/pptp-alg-lab"
    assert (state.state_path, state.config_path, state.log_path, state.pid_path) == (
        "/run/pptp-alg-lab/lab.json", "/run/pptp-alg-lab/gateway.conf",
        "/run/pptp-alg-lab/ryu.log", "/run/pptp-alg-lab/ryu.pid")
    assert [state.client(1), state.client(2)] == ["c1", "c2"]


def test_a_named_lab_has_names_of_its_own() -> None:
    state = lab.plan(2, public_ips=2, name="t7")
    assert state.name == "t7"
    assert state.namespaces == ["t7-c1", "t7-c2", "t7-srv"]
    assert state.client_namespaces == ["t7-c1", "t7-c2"]
    assert state.server_namespace == "t7-srv"
    assert [state.client(1), state.client(2)] == ["t7-c1", "t7-c2"]
    assert state.ports == {"t7-c1": 1, "t7-c2": 2, "t7-srv": 100}
    assert state.namespace_ports == {"t7-c1": "t7-c1", "t7-c2": "t7-c2", "t7-srv": "t7-srv"}
    assert state.inside_ports == ["t7-c1", "t7-c2"]
    assert state.outside_port == "t7-srv"
    assert state.bridge == "br-t7"
    assert state.run_dir == "/run/pptp-alg-lab-t7"
    assert Path(state.state_path) == Path("/run/pptp-alg-lab-t7/lab.json")
    assert Path(state.log_path).parent == Path(state.config_path).parent == Path(state.run_dir)
    assert state.datapath_id not in (0, lab.DEFAULT_DATAPATH_ID)
    # The ports are picked at `up`; the addresses are those of every lab.
    assert (state.openflow_port, state.rest_port, state.controller, state.rest_url) == (
        0, 0, "", "")
    assert state.addresses == {
        "t7-c1": "192.168.1.1", "t7-c2": "192.168.1.2", "t7-srv": "203.0.113.1"}
    assert state.server_ip == "203.0.113.1"
    assert state.public_ips == ["203.0.113.2", "203.0.113.3"]
    with pytest.raises(ValueError, match=r"clients 1 \.\. 2"):
        state.client(3)


def test_a_named_lab_gets_its_ports_and_urls_together() -> None:
    state = lab.plan(1, name="t7")
    state.use_ports(40001, 40002)
    assert (state.openflow_port, state.rest_port) == (40001, 40002)
    assert state.controller == "tcp:127.0.0.1:40001"
    assert state.rest_url == "http://127.0.0.1:40002"


def test_the_longest_name_fits_linux_interface_names() -> None:
    name = "z" * lab.MAX_NAME_LENGTH
    state = lab.plan(lab.MAX_CLIENTS, name=name)
    for ifname in [*state.ports, state.bridge]:
        assert len(ifname) <= 15, ifname


@pytest.mark.parametrize(
    "name", ["", "Lab", "a-b", "a_b", "a.b", "a b", "../x", "x" * (lab.MAX_NAME_LENGTH + 1),
             "é"])
def test_bad_names_are_refused_with_the_rule(name: str) -> None:
    for call in (lambda: lab.plan(1, name=name), lambda: lab.run_dir(name),
                 lambda: lab.bridge_name(name), lambda: lab.check_name(name)):
        with pytest.raises(ValueError, match="1 to 10 characters of a-z and 0-9"):
            call()


def test_every_name_has_its_own_datapath_id() -> None:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    names = ["".join(chars) for n in (1, 2) for chars in itertools.product(alphabet, repeat=n)]
    names += ["lab0", "lab00", "a0", "0a", "aaaaaaaaaa", "9999999999"]
    ids = {lab.datapath_id(name) for name in names if name != lab.DEFAULT_NAME}
    assert len(ids) == len({n for n in names if n != lab.DEFAULT_NAME})
    assert lab.DEFAULT_DATAPATH_ID not in ids
    assert all(0 < i < 1 << 64 for i in ids)


@pytest.mark.parametrize(
    ("name", "mine", "not_mine"),
    [
        ("lab", ["c1", "c64", "srv"], ["t7-c1", "t7-srv", "srv2", "c1x", "c", "lab-c1"]),
        ("t7", ["t7-c1", "t7-c64", "t7-srv"], ["c1", "srv", "t70-c1", "t7-c1x", "xt7-c1"]),
    ],
)
def test_down_deletes_only_names_of_the_lab_s_own_pattern(
    name: str, mine: list[str], not_mine: list[str]
) -> None:
    pattern = lab.namespace_pattern(name)
    assert all(pattern.fullmatch(ns) for ns in mine)
    assert not any(pattern.fullmatch(ns) for ns in not_mine)
    ports = lab.port_pattern(name)
    assert ports.fullmatch(f"{name}-c3") and ports.fullmatch(f"{name}-srv")
    assert not ports.fullmatch("c3") and not ports.fullmatch(f"x{name}-c3")


def test_without_a_state_file_down_falls_back_to_the_lab_s_own_names() -> None:
    assert lab.owned("lab", None) == (
        [f"c{i}" for i in range(1, 65)] + ["srv"], [f"lab-c{i}" for i in range(1, 65)]
        + ["lab-srv"])
    spaces, ports = lab.owned("t7", None)
    assert spaces == ports == [f"t7-c{i}" for i in range(1, 65)] + ["t7-srv"]


def test_down_ignores_foreign_names_in_a_state_file() -> None:
    state = lab.plan(2, name="t7")
    state.namespaces.append("c1")
    state.namespace_ports["c1"] = "lab-c1"
    assert lab.owned("t7", state) == (["t7-c1", "t7-c2", "t7-srv"],
                                       ["t7-c1", "t7-c2", "t7-srv"])


def test_config_file_of_a_named_lab_names_its_ports_and_bridge() -> None:
    parser = configparser.ConfigParser()
    parser.read_string(lab.render_config(lab.plan(2, name="t7")))
    assert parser["nat"]["inside_ports"] == "t7-c1,t7-c2"
    assert parser["nat"]["outside_port"] == "t7-srv"
    assert parser["nat"]["bridge"] == "br-t7"


def test_named_state_round_trips_and_an_old_state_file_is_the_default_lab() -> None:
    state = lab.plan(2, name="t7")
    state.use_ports(40001, 40002)
    assert lab.LabState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    old = lab.plan(2).to_dict()
    for key in ("name", "server_namespace", "datapath_id", "openflow_port", "rest_port"):
        del old[key]
    restored = lab.LabState.from_dict(old)
    expected = lab.plan(2)
    expected.created = restored.created
    assert restored == expected
    assert restored.client_namespaces == ["c1", "c2"] and restored.server_ip == "203.0.113.1"


def test_picked_ports_are_free_distinct_and_avoid_the_taken_ones() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = {int(busy.getsockname()[1]), switch.OPENFLOW_PORT, switch.REST_PORT}
        first, second = lab.pick_ports(taken)
    assert first != second
    assert not {first, second} & taken
    for port in (first, second):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_commands_in_messages_name_the_lab_only_when_it_is_not_the_default() -> None:
    assert lab.command("down") == "python -m topo.lab down"
    assert lab.command("down", "t7") == "python -m topo.lab down --name t7"
    assert lab.command("up", "t7", "--replace") == "python -m topo.lab up --name t7 --replace"


@pytest.mark.parametrize("argv", [["up", "--clients", "1", "--name", "Bad"],
                                  ["down", "--name", "a-b"], ["status", "--name", "x" * 11],
                                  ["display", "--name", "A", "counters"],
                                  ["restart-controller", "--name", "Bad"],
                                  ["restart-switch", "--name", "a_b"]])
def test_cli_refuses_a_bad_name(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert lab.main(argv) == 1
    assert "is not valid: use 1 to 10 characters of a-z and 0-9" in capsys.readouterr().err


# ---------------------------------------------------------------------------- restarts


@pytest.fixture
def lab_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The labs' folders go to ``tmp_path``; no OVS command and no process may run."""
    monkeypatch.setattr(names, "DEFAULT_RUN_DIR", tmp_path / "pptp-alg-lab")

    def no_command(argv: Any, **_: Any) -> str:
        raise AssertionError(f"ran {argv}")

    def no_process(*_: Any, **__: Any) -> Any:
        raise AssertionError("touched a controller")

    monkeypatch.setattr(netns, "run", no_command)
    monkeypatch.setattr(ovs, "bridge_exists", lambda bridge: False)
    monkeypatch.setattr(controller, "stop", no_process)
    monkeypatch.setattr(controller, "start", no_process)
    return tmp_path


def write_up_state(name: str, pid: int | None = 4242) -> lab.LabState:
    """Record lab ``name`` as up (in the folder of ``lab_dir``)."""
    state = lab.plan(2, name=name)
    state.use_ports(40001, 40002)
    state.controller_pid = pid
    state.phase = "up"
    Path(state.run_dir).mkdir(parents=True, exist_ok=True)
    lab.write_state(state)
    return state


@pytest.mark.parametrize("restart", [lab.restart_controller, lab.restart_switch])
def test_a_restart_of_a_lab_without_state_is_refused_and_makes_no_folder(
    lab_dir: Path, restart: Any
) -> None:
    with pytest.raises(lab.LabError, match=r"lab t7 is not up \(no state file .*lab\.json\)"):
        restart(name="t7")
    assert not lab.run_dir("t7").exists()
    assert lab.run_dir("t7").parent == lab_dir


@pytest.mark.parametrize("restart", [lab.restart_controller, lab.restart_switch])
def test_a_restart_of_a_lab_that_is_not_up_is_refused_with_why(
    lab_dir: Path, restart: Any
) -> None:
    state = write_up_state("t7", pid=None)
    with pytest.raises(lab.LabError) as info:
        restart(name="t7", timeout=1)
    message = str(info.value)
    assert "lab t7 is not up (bridge br-t7 does not exist; pptp-alg-gateway (pid None)" in message
    assert "python -m topo.lab status --name t7" in message
    assert lab.read_state("t7") == state  # nothing was recorded


def test_a_restart_in_the_middle_of_another_is_refused(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = write_up_state("t7")
    state.phase = "restarting"
    lab.write_state(state)
    monkeypatch.setattr(ovs, "bridge_exists", lambda bridge: True)
    monkeypatch.setattr(ovs, "is_connected", lambda bridge: True)
    monkeypatch.setattr(controller, "is_controller", lambda pid, config: True)
    with pytest.raises(lab.LabError, match=r"did not finish \(phase restarting\)"):
        lab.restart_switch(name="t7")


class FakeChild:
    """What ``controller.start`` returns, as far as the restarts look at it."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def up_lab_with_fake_ovs(
    monkeypatch: pytest.MonkeyPatch, name: str = "t7", state: lab.LabState | None = None
) -> tuple[lab.LabState, list[Any]]:
    """Lab ``name`` recorded as up (``state`` if given, already written), with OVS and the
    controller replaced by a recorder."""
    state = write_up_state(name) if state is None else state
    Path(state.pid_path).write_text(f"{state.controller_pid}\n")
    calls: list[Any] = []
    monkeypatch.setattr(health, "status", lambda n: lab.read_state(n) if n == name else None)

    def vsctl(*args: str, check: bool = True) -> str:
        calls.append(("vsctl", *args))
        return ""

    def ofctl(*args: str, check: bool = True) -> str:
        calls.append(("ofctl", *args))
        return ""

    def appctl(*args: str, check: bool = True) -> str:
        calls.append(("appctl", *args))
        return ""

    monkeypatch.setattr(ovs, "vsctl", vsctl)
    monkeypatch.setattr(ovs, "ofctl", ofctl)
    monkeypatch.setattr(ovs, "appctl", appctl)
    monkeypatch.setattr(ovs, "flow_count", lambda bridge: 0)
    monkeypatch.setattr(ovs, "meter_count", lambda bridge: 0)
    monkeypatch.setattr(controller, "stop",
                        lambda pid, config, quiet: calls.append(("stop", pid, config)))

    def start(s: lab.LabState) -> FakeChild:
        calls.append(("start", s.config_path, s.openflow_port, s.rest_port, s.app))
        Path(s.pid_path).write_text("5151\n")
        return FakeChild(5151)

    monkeypatch.setattr(controller, "start", start)
    monkeypatch.setattr(controller, "wait_listening",
                        lambda s, child, deadline: calls.append(("listening", child.pid)))

    def ready(s: lab.LabState, child: Any, deadline: float, since: float | None = None,
              bridges: list[str] | None = None) -> None:
        recorded = lab.read_state(name)
        assert recorded is not None and recorded.phase == "restarting"
        assert since is not None and since <= deadline
        calls.append(("ready", None if child is None else child.pid))

    monkeypatch.setattr(controller, "wait_ready", ready)
    return state, calls


def test_restart_controller_stops_the_recorded_one_and_records_the_new_pid(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, calls = up_lab_with_fake_ovs(monkeypatch)
    got = lab.restart_controller(name="t7", timeout=5)
    assert calls == [
        ("stop", 4242, state.config_path),
        ("start", state.config_path, 40001, 40002, state.app),
        ("listening", 5151),
        ("ready", 5151),
    ]
    assert got.controller_pid == 5151 and got.phase == "up"
    recorded = lab.read_state("t7")
    assert recorded is not None and recorded.controller_pid == 5151 and recorded.phase == "up"
    assert (recorded.openflow_port, recorded.rest_port) == (40001, 40002)
    assert not [c for c in calls if c[0] in ("vsctl", "ofctl")]  # the bridge is left alone


def test_restart_controller_also_stops_a_controller_of_the_pid_file(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, calls = up_lab_with_fake_ovs(monkeypatch)
    Path(state.pid_path).write_text("4243\n")
    lab.restart_controller(name="t7")
    assert [c for c in calls if c[0] == "stop"] == [
        ("stop", 4242, state.config_path), ("stop", 4243, state.config_path)]


def test_restart_switch_empties_only_the_lab_s_bridge_and_sets_the_controller_as_up(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, calls = up_lab_with_fake_ovs(monkeypatch)
    got = lab.restart_switch(name="t7", timeout=5)
    assert calls == [
        ("vsctl", "del-controller", "br-t7"),
        ("ofctl", "del-flows", "br-t7"),
        ("ofctl", "del-meters", "br-t7"),
        ("vsctl", "set-controller", "br-t7", "tcp:127.0.0.1:40001", "--", "set", "controller",
         "br-t7", "connection_mode=out-of-band", "max_backoff=1000"),
        ("ready", None),
        ("appctl", "revalidator/wait"),
    ]
    assert got.controller_pid == state.controller_pid and got.phase == "up"
    recorded = lab.read_state("t7")
    assert recorded is not None and recorded.phase == "up"


def test_restart_switch_refuses_to_go_on_when_flows_are_left(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, calls = up_lab_with_fake_ovs(monkeypatch)
    monkeypatch.setattr(ovs, "flow_count", lambda bridge: 2)
    with pytest.raises(lab.LabError, match="br-t7 still has 2 flow"):
        lab.restart_switch(name="t7")
    assert not [c for c in calls if c[:2] == ("vsctl", "set-controller")]


def test_restart_switch_reports_a_failing_ovs_command(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up_lab_with_fake_ovs(monkeypatch)

    def refuse(*args: str, check: bool = True) -> str:
        raise CommandError(["ovs-ofctl", *args], 1, "no such meter command")

    monkeypatch.setattr(ovs, "ofctl", refuse)
    with pytest.raises(lab.LabError, match=r"emptying br-t7 failed: .*no such meter command"):
        lab.restart_switch(name="t7")


SAMPLE_DUMP = "\n".join([
    "OFPST_FLOW reply (OF1.3) (xid=0x2):",
    " cookie=0x5001000000000000, duration=3.740s, table=0, n_packets=0, n_bytes=0, "
    "priority=1000,arp actions=meter:1,CONTROLLER:65535",
    " cookie=0x5001000000000000, duration=0.25s, table=1, n_packets=4, n_bytes=392, "
    "priority=0 actions=drop",
    "",
])


def test_pipeline_flows_count_and_their_age(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []

    def dump(*args: str, check: bool = True) -> str:
        seen.append(args)
        return SAMPLE_DUMP

    monkeypatch.setattr(ovs, "ofctl", dump)
    assert ovs.pipeline_ages("br-t7") == [3.74, 0.25]
    assert ovs.pipeline_flows("br-t7") == 2
    assert seen[0] == ("dump-flows", "br-t7", switch.kind_filter(EntryKind.PIPELINE))
    now = time.monotonic()
    assert ovs.pipeline_installed("br-t7", None)
    assert ovs.pipeline_installed("br-t7", now - 4)  # all added after it
    assert not ovs.pipeline_installed("br-t7", now - 1)  # one flow is older
    monkeypatch.setattr(ovs, "ofctl", lambda *a, check=True: "OFPST_FLOW reply (OF1.3):\n")
    assert not ovs.pipeline_installed("br-t7", None)


@pytest.mark.parametrize(("verb", "function"), [("restart-controller", "restart_controller"),
                                                ("restart-switch", "restart_switch")])
def test_cli_runs_a_restart_with_its_name_and_timeout(
    verb: str, function: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    called: list[dict[str, Any]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(restarts, function, lambda **kw: called.append(kw))
    monkeypatch.setattr(health, "describe", lambda name: (True, f"lab: up\n  name {name}"))
    assert lab.main([verb, "--name", "t7", "--timeout", "12.5"]) == 0
    assert called == [{"name": "t7", "timeout": 12.5, "quiet": False}]
    assert "name t7" in capsys.readouterr().out
    assert lab.main([verb]) == 0
    assert called[-1] == {"name": lab.DEFAULT_NAME, "timeout": 30.0, "quiet": False}


@pytest.mark.parametrize("verb", ["restart-controller", "restart-switch"])
def test_cli_restart_of_a_lab_that_is_not_up_fails_with_the_reason(
    verb: str, lab_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert lab.main([verb, "--name", "t7"]) == 1
    assert "topo.lab: lab t7 is not up (no state file" in capsys.readouterr().err


def test_cli_lists_the_restarts_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        lab.main(["--help"])
    out = capsys.readouterr().out
    assert "restart-controller" in out and "restart-switch" in out
    assert "restart-controller [--name NAME]" in (lab.__doc__ or "")
    assert "restart-switch [--name NAME]" in (lab.__doc__ or "")


# ---------------------------------------------------------------- several bridges


def test_every_gateway_s_interface_names_fit_linux_for_the_longest_lab_name() -> None:
    from topo.gre_demux import peer_name

    name = "z" * lab.MAX_NAME_LENGTH
    for bridges in range(1, lab.MAX_BRIDGES + 1):
        state = lab.plan(lab.MAX_CLIENTS, name=name, bridges=bridges, gre_demux=True)
        assert len(state.all_gateways) == bridges
        for gateway in state.all_gateways:
            demux = [gateway.gre_demux_port, peer_name(gateway.gre_demux_port)]
            for ifname in [*gateway.ports, gateway.bridge, *demux]:
                assert len(ifname.encode()) <= netns.IFNAMSIZ, ifname


def test_gateways_of_a_lab_have_names_of_their_own_and_today_s_for_gateway_1() -> None:
    state = lab.plan(2, name="t7", bridges=3)
    assert state.bridges == 3
    g1, g2, g3 = state.all_gateways
    assert [g.name for g in (g1, g2, g3)] == ["g1", "g2", "g3"]
    assert (g1.namespaces, g1.bridge, g1.outside_port) == (
        ["t7-c1", "t7-c2", "t7-srv"], "br-t7", "t7-srv")
    assert g2.namespaces == ["t7-g2c1", "t7-g2c2", "t7-g2srv"]
    assert g2.ports == {"t7-2c1": 1, "t7-2c2": 2, "t7-2srv": 100}
    assert g2.namespace_ports["t7-g2srv"] == "t7-2srv"
    assert (g3.bridge, g3.server_namespace, g3.client(2)) == ("br-t7-3", "t7-g3srv", "t7-g3c2")
    assert g1.addresses == dict(zip(g1.namespaces, g2.addresses.values(), strict=True))
    assert g2.server_ip == "203.0.113.1" and g3.addresses["t7-g3c1"] == "192.168.1.1"
    assert [g.rest_prefix for g in (g1, g2)] == ["/pptp-alg/gateways/g1",
                                                  "/pptp-alg/gateways/g2"]
    assert g2.rest_path("/pptp-alg/counters") == "/pptp-alg/gateways/g2/counters"
    assert g2.rest_path("/pptp-alg/gateways") == "/pptp-alg/gateways"
    assert g2.rest_path("/metrics") == "/metrics"
    # The fields of the lab that name a gateway's part are gateway 1's.
    assert (state.namespaces, state.ports, state.bridge, state.datapath_id) == (
        g1.namespaces, g1.ports, g1.bridge, g1.datapath_id)
    assert state.gateway("g3") == g3 and state.gateway(2) == g2
    with pytest.raises(ValueError, match=r"gateways g1 \.\. g3"):
        state.gateway("g4")
    default = lab.plan(1, bridges=2)
    assert default.gateway("g2").namespaces == ["g2c1", "g2srv"]
    assert default.gateway("g2").ports == {"lab-2c1": 1, "lab-2srv": 100}
    assert default.gateway("g2").bridge == "br-lab-2"
    one = lab.plan(2, name="t7")
    assert one.bridges == 1 and [g.name for g in one.all_gateways] == ["g1"]
    assert one.gateway("g1").rest_prefix == "/pptp-alg"


@pytest.mark.parametrize("bridges", [0, 10, True])
def test_plan_refuses_a_number_of_bridges_out_of_range(bridges: int) -> None:
    with pytest.raises(ValueError, match=r"bridges must be 1 \.\. 9"):
        lab.plan(1, bridges=bridges)


def test_no_interface_bridge_or_namespace_of_one_lab_is_another_lab_s() -> None:
    """Lab ``t1``'s gateway 2 and lab ``t12``'s gateway 1 (and so on) never share a name."""
    seen: dict[str, str] = {}
    for name in ("t1", "t12", "t2", "lab", "lab2", "g2", "t"):
        state = lab.plan(3, name=name, bridges=3, gre_demux=True)
        for gateway in state.all_gateways:
            for thing in [*gateway.namespaces, *gateway.ports, gateway.bridge,
                          gateway.gre_demux_port]:
                owner = seen.setdefault(thing, f"{name}/{gateway.name}")
                assert owner == f"{name}/{gateway.name}", thing


def test_every_gateway_has_its_own_datapath_id_and_zone() -> None:
    ids = [lab.datapath_id(name, j) for name in ("lab", "t7", "a", "zzzzzzzzzz")
           for j in range(1, lab.MAX_BRIDGES + 1)]
    assert len(set(ids)) == len(ids) and all(0 < i < 1 << 64 for i in ids)
    assert lab.datapath_id("lab", 1) == lab.DEFAULT_DATAPATH_ID
    assert lab.datapath_id("t7") == lab.datapath_id("t7", 1)
    for name in ("lab", "t7"):
        zones = [g.ct_zone for g in lab.plan(1, name=name, bridges=9).all_gateways]
        assert zones[0] == lab_zone(name) and len(set(zones)) == 9
        assert all(1000 <= z <= 60999 for z in zones)


def config_sections(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return {section: dict(parser[section]) for section in parser.sections()}


def test_config_file_of_two_bridges_has_a_section_per_gateway() -> None:
    state = lab.plan(2, policy="strict", name="t7", bridges=2, gre_demux=True,
                     options={"gre_idle": "60"})
    state.use_ports(40001, 40002)
    sections = config_sections(lab.render_config(state))
    assert list(sections) == ["nat", "gateway:g1", "gateway:g2"]
    assert sections["nat"] == {
        "inside_subnet": "192.168.1.0/24", "inside_gateway": "192.168.1.254",
        "outside_subnet": "203.0.113.0/24", "public_ips": "203.0.113.2", "policy": "strict",
        "alg": "true", "rest_host": "127.0.0.1", "rest_port": "40002", "gre_idle": "60"}
    g1, g2 = sections["gateway:g1"], sections["gateway:g2"]
    assert g1 == {
        "inside_ports": "t7-c1,t7-c2", "outside_port": "t7-srv", "bridge": "br-t7",
        "state_file": "/run/pptp-alg-lab-t7/gateway-state.sqlite",
        "ct_zone": str(lab_zone("t7")), "gre_demux_port": "t7-dmx",
        "gre_demux_dir": "/run/pptp-alg-lab-t7/bpf"}
    assert g2 == {
        "inside_ports": "t7-2c1,t7-2c2", "outside_port": "t7-2srv", "bridge": "br-t7-2",
        "state_file": "/run/pptp-alg-lab-t7/gateway-state-g2.sqlite",
        "ct_zone": str(state.gateway("g2").ct_zone), "gre_demux_port": "t7-2dmx",
        "gre_demux_dir": "/run/pptp-alg-lab-t7/bpf-g2"}
    for key in ("bridge", "state_file", "ct_zone", "gre_demux_port", "gre_demux_dir",
                "outside_port"):
        assert g1[key] != g2[key], key
    for section in (g1, g2):  # each gateway is one the app loads
        config = load({**sections["nat"], **section})
        assert config.alg.policy == "strict" and config.alg.gre_idle == 60.0
    loaded = load_gateways(sections["nat"], {"g1": g1, "g2": g2})
    assert [c.bridge for c in loaded.values()] == ["br-t7", "br-t7-2"]


def test_options_a_gateway_must_not_share_are_refused_with_several_bridges() -> None:
    for key, value in (("ct_zone", "77"), ("state_file", "/tmp/one.sqlite"),
                       ("bridge", "br-x"), ("inside_ports", "x")):
        with pytest.raises(ConfigError, match="each gateway of a lab of several") as info:
            lab.plan(1, name="t7", bridges=2, options={key: value})
        assert info.value.key == f"nat.{key}", info.value
        assert lab.plan(1, name="t7", options={key: value}).options == {key: value}
    with pytest.raises(ConfigError) as info:  # the app's rule between gateways
        lab.plan(1, name="t7", bridges=2, options={"datapath_id": "5"})
    assert info.value.key == "gateway:g2.datapath_id"
    with pytest.raises(ConfigError) as info:
        lab.plan(1, name="t7", bridges=2, options={"gre_idle": "0"})
    assert info.value.key.endswith(".gre_idle")


def test_state_of_two_bridges_round_trips_and_one_bridge_writes_today_s_keys() -> None:
    state = lab.plan(2, name="t7", bridges=2)
    state.use_ports(40001, 40002)
    state.phase = "up"
    data = json.loads(json.dumps(state.to_dict()))
    assert [g["name"] for g in data["gateways"]] == ["g1", "g2"]
    assert data["gateways"][1]["bridge"] == "br-t7-2"
    assert data["bridge"] == "br-t7" and data["namespaces"] == ["t7-c1", "t7-c2", "t7-srv"]
    restored = lab.LabState.from_dict(data)
    assert restored == state and restored.gateway("g2").ports == state.gateway("g2").ports
    assert "gateways" not in lab.plan(2, name="t7").to_dict()
    placed = lab.plan(1, name="t7", bridges=2)
    placed.place(Path("/elsewhere"))
    assert placed.gateway("g2").state_file == "/elsewhere/gateway-state-g2.sqlite"


def test_down_of_a_lab_of_several_bridges_owns_every_gateway_s_names() -> None:
    state = lab.plan(1, name="t7", bridges=2)
    assert lab.owned("t7", state) == (["t7-c1", "t7-srv", "t7-g2c1", "t7-g2srv"],
                                       ["t7-c1", "t7-srv", "t7-2c1", "t7-2srv"])
    spaces, ports = lab.owned("t7", None, ["br-t7", "br-t7-3"])
    assert "t7-g3c64" in spaces and "t7-3srv" in ports and "t7-g2c1" not in spaces
    pattern, port_pattern = lab.namespace_pattern("t7"), lab.port_pattern("t7")
    assert pattern.fullmatch("t7-g9srv") and not pattern.fullmatch("t7-g1c1")
    assert port_pattern.fullmatch("t7-2c1") and not port_pattern.fullmatch("t7-2dmx")
    assert not port_pattern.fullmatch("t72-c1")


def test_restart_switch_of_gateway_2_empties_only_its_bridge(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = lab.plan(2, name="t7", bridges=2)
    state.use_ports(40001, 40002)
    state.controller_pid = 4242
    state.phase = "up"
    Path(state.run_dir).mkdir(parents=True, exist_ok=True)
    lab.write_state(state)
    _, calls = up_lab_with_fake_ovs(monkeypatch, state=state)
    waited: list[Any] = []
    monkeypatch.setattr(controller, "wait_ready",
                        lambda s, child, deadline, since=None, bridges=None: waited.append(
                            bridges))
    lab.restart_switch(name="t7", timeout=5, gateway="g2")
    touched = {arg for call in calls if call[0] in ("vsctl", "ofctl") for arg in call[2:3]}
    assert touched == {"br-t7-2"}
    assert waited == [["br-t7-2"]]
    with pytest.raises(ValueError, match=r"gateways g1 \.\. g2"):
        lab.restart_switch(name="t7", gateway="g3")
    recorded = lab.read_state("t7")
    assert recorded is not None and recorded.phase == "up"


def test_cli_passes_a_gateway_to_status_and_restart_switch_and_refuses_a_bad_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    called: list[dict[str, Any]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(restarts, "restart_switch", lambda **kw: called.append(kw))
    monkeypatch.setattr(health, "describe",
                        lambda name, gateway=None: (gateway == "g2", f"gateway {gateway}"))
    assert lab.main(["restart-switch", "--name", "t7", "--gateway", "g2"]) == 0
    assert called == [{"name": "t7", "timeout": 30.0, "quiet": False, "gateway": "g2"}]
    assert lab.main(["status", "--name", "t7", "--gateway", "g2"]) == 0
    assert "gateway g2" in capsys.readouterr().out
    for bad in ("g0", "g10", "2", "G2"):
        assert lab.main(["status", "--name", "t7", "--gateway", bad]) == 1
        assert "a lab's gateways are g1 .. g9" in capsys.readouterr().err


def test_mininet_topology_of_two_bridges_matches_the_lab() -> None:
    if mininet_lab.HAVE_MININET:  # pragma: no cover - Mininet is not a dependency
        pytest.skip("checks the stand-in layout only")
    state = lab.plan(1, name="t7", bridges=2)
    topo = mininet_lab.PptpLab(1, name="t7", dpid=f"{state.datapath_id:016x}", bridges=2,
                               dpids=[f"{state.gateway(2).datapath_id:016x}"])
    assert topo.switch_names == ["br-t7", "br-t7-2"]
    assert topo.nodes["br-t7-2"]["dpid"] == f"{lab.datapath_id('t7', 2):016x}"
    assert topo.nodes["g2c1"]["ip"] == "192.168.1.1/24"
    assert topo.nodes["g2srv"]["ip"] == "203.0.113.1/24"
    assert [(a, b, opts["port2"], opts["intfName2"]) for a, b, opts in topo.links] == [
        ("c1", "br-t7", 1, "t7-c1"), ("srv", "br-t7", 100, "t7-srv"),
        ("g2c1", "br-t7-2", 1, "t7-2c1"), ("g2srv", "br-t7-2", 100, "t7-2srv")]
    assert set(topo.links[2][2].values()) >= set(state.gateway(2).ports) - {"t7-2srv"}


def test_display_of_a_gateway_reads_its_prefix(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from topo import display

    seen: list[list[str]] = []
    monkeypatch.setattr(display, "main", lambda argv: seen.append(list(argv)) or 0)
    several = lab.plan(1, name="t7", bridges=2)
    several.use_ports(40001, 40002)
    Path(several.run_dir).mkdir(parents=True, exist_ok=True)
    lab.write_state(several)
    assert lab.main(["display", "--name", "t7", "--gateway", "g2", "counters"]) == 0
    assert lab.main(["display", "--name", "t7", "counters", "-v"]) == 0
    assert seen == [["--rest", "http://127.0.0.1:40002", "counters", "--gateway", "g2"],
                    ["--rest", "http://127.0.0.1:40002", "counters", "--verbose"]]
    assert lab.main(["display", "--name", "t7", "--gateway", "g3", "counters"]) == 1
    assert "gateways g1 .. g2" in capsys.readouterr().err
    one = write_up_state("t8")
    assert lab.main(["display", "--name", "t8", "--gateway", "g1", "counters"]) == 0
    assert seen[-1] == ["--rest", one.rest_url, "counters"]  # its one gateway: /pptp-alg
    assert display.prefix("g2") == "/pptp-alg/gateways/g2" and display.prefix() == "/pptp-alg"
    with pytest.raises(ValueError, match="not a gateway's name"):
        display.prefix("../x")
