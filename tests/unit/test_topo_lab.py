"""The lab's pure parts: its names, plan, the app's configuration, the state file, Mininet."""

from __future__ import annotations

import configparser
import itertools
import json
import socket
from pathlib import Path

import pytest

from alg.config import load
from alg.errors import ConfigError
from ryu_apps import switch
from topo import lab, mininet_lab


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
    }


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
                                  ["display", "--name", "A", "counters"]])
def test_cli_refuses_a_bad_name(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert lab.main(argv) == 1
    assert "is not valid: use 1 to 10 characters of a-z and 0-9" in capsys.readouterr().err
