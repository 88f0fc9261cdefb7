"""The lab's pure parts: its plan, the app's configuration, the state file, Mininet."""

from __future__ import annotations

import configparser
import json

import pytest

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
