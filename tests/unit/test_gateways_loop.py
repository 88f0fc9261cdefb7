"""One app, two gateways, two closed-loop fake switches with the same addresses: each
gateway its own switch, Call IDs, server-map, counters and failures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from alg.config import OPTIONS as OPTION_TABLE
from ryu_apps import nat_gateway
from ryu_apps.framework import hub
from ryu_apps.framework import ofproto_v1_3_parser as parser
from ryu_apps.nat_gateway import NatGateway
from tests.unit.app_env import CLIENT_MAC, OTHER_MAC, SERVER, SERVER_MAC
from tests.unit.fake_hosts import Host, PptpServer
from tests.unit.fake_switch import FakeSwitch
from tests.unit.test_closed_loop import CLIENT1, CLIENT2, OPTIONS, Clock, Lab, check_clean

NAT = {k: v for k, v in OPTIONS.items() if k not in ("bridge", "inside_ports", "outside_port")}


class FakeConf:
    """oslo.config's CONF as the app reads it: ``[nat]`` and ``[gateway:NAME]`` groups."""

    def __init__(self, nat: dict[str, Any], gateways: dict[str, dict[str, Any]]) -> None:
        self.nat = nat
        self._groups = {f"gateway:{name}": {**{o.name: None for o in OPTION_TABLE}, **values}
                        for name, values in gateways.items()}

    def list_all_sections(self) -> list[str]:
        return ["nat", *self._groups]

    def __contains__(self, group: str) -> bool:
        return group in self._groups

    def __getitem__(self, group: str) -> dict[str, Any]:
        return self._groups[group]


def gateway_options(tag: str, **more: Any) -> dict[str, Any]:
    return {"bridge": f"br-{tag}", "inside_ports": [f"{tag}1", f"{tag}2"],
            "outside_port": f"{tag}out", **more}


@pytest.fixture
def labs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Lab, Lab]]:
    """Gateways ``a`` and ``b`` of one app, each on its switch with two clients and a
    server, every address the same on both."""
    monkeypatch.setattr(nat_gateway, "CONF", FakeConf(NAT, {
        "a": gateway_options("a"), "b": gateway_options("b", ct_zone=2)}))
    monkeypatch.setattr(hub, "spawn", lambda *_a, **_k: None)
    clock = Clock()
    app = NatGateway()
    app.now = clock  # type: ignore[method-assign]
    built = []
    for tag, dpid in (("a", 0xA), ("b", 0xB)):
        switch = FakeSwitch({f"{tag}1": 1, f"{tag}2": 2, f"{tag}out": 100}, clock,
                            bridge=f"br-{tag}", datapath_id=dpid)
        switch.connect(app)
        client1 = Host(switch, 1, CLIENT_MAC, f"{CLIENT1}/24", "192.168.1.254")
        client2 = Host(switch, 2, OTHER_MAC, f"{CLIENT2}/24", "192.168.1.254")
        server = Host(switch, 100, SERVER_MAC, f"{SERVER}/24")
        built.append(Lab(clock, switch, app, client1, client2, server, PptpServer(server)))
    a, b = built
    yield a, b
    check_clean(a)
    check_clean(b)


def test_each_gateway_binds_its_own_switch(labs: tuple[Lab, Lab]) -> None:
    a, b = labs
    app = a.app
    assert list(app.gateways) == ["a", "b"]
    assert app.gateways["a"].datapath is a.switch and app.gateways["b"].datapath is b.switch
    assert app.gateways["a"].ready and app.gateways["b"].ready
    assert a.switch.entries(eth_type=0x0806) and b.switch.entries(eth_type=0x0806)
    assert app.process_counters.switches_refused == 0


def test_the_same_call_id_through_both_gateways_stays_apart(labs: tuple[Lab, Lab]) -> None:
    a, b = labs
    da = a.dial(a.client1, 4242)
    db = b.dial(b.client1, 4242)
    # Each gateway keeps the client's Call ID: neither knows the other's call.
    assert da.server_call.peer_call_id == 4242 and db.server_call.peer_call_id == 4242
    for lab in (a, b):
        [call] = list(lab.app.gateways[lab.switch.bridge[3:]].core.calls())
        assert call.client_call_id == call.public_call_id == 4242
    a.forget()
    b.forget()
    a.pac.send_gre(da.server_call, 1)
    b.pac.send_gre(db.server_call, 7)
    db.link.send_gre(db.call, 9)
    a.settle()
    b.settle()
    assert [(g.call_id, g.sequence) for g in a.client1.gre] == [(4242, 1)]
    assert [(g.call_id, g.sequence) for g in b.client1.gre] == [(4242, 7)]
    assert [g.sequence for g in b.server.gre] == [9] and a.server.gre == []
    counters = {name: unit.core.counters.calls_set_up
                for name, unit in a.app.gateways.items()}
    assert counters == {"a": 1, "b": 1}


def test_a_failing_event_of_one_gateway_leaves_the_other_alone(
        labs: tuple[Lab, Lab], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = labs
    unit_a = a.app.gateways["a"]

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a fault no check foresaw")

    monkeypatch.setattr(unit_a.core, "handle", broken)
    sent_before = len(b.switch.sent)
    with pytest.raises(RuntimeError):
        a.client1.send_udp(SERVER, 5000, 53, b"q")
        a.settle()
    a.switch._queue.clear()
    monkeypatch.undo()
    d = b.dial(b.client1, 4242)
    assert d.server_call.peer_call_id == 4242
    assert len(b.switch.sent) > sent_before
    assert unit_a.switch.outbox._queue == []


def test_one_switch_restarting_leaves_the_others_calls_on_their_entries(
        labs: tuple[Lab, Lab]) -> None:
    a, b = labs
    da = a.dial(a.client1, 4242)
    db = b.dial(b.client1, 4242)
    b_entries = {e.cookie for e in b.switch.table}
    b.switch.sent.clear()
    a.switch.table.clear()
    a.switch.meters.clear()
    a.switch.connect(a.app)
    a.settle()
    assert not [m for m in b.switch.sent if isinstance(m, parser.OFPFlowMod)]
    assert {e.cookie for e in b.switch.table} == b_entries
    assert a.app.gateways["a"].counters.reconciliations == 1
    assert a.app.gateways["b"].counters.reconciliations == 0
    for lab, d in ((a, da), (b, db)):
        lab.forget()
        lab.pac.send_gre(d.server_call, 3)
        lab.settle()
        assert lab.switch.packet_ins == []
        assert [(g.call_id, g.sequence) for g in lab.client1.gre] == [(4242, 3)]


def test_the_http_api_has_each_gateways_views_and_labels(labs: tuple[Lab, Lab]) -> None:
    import json

    from tests.unit.test_gateway_app import get, scrape

    a, _b = labs
    a.dial(a.client1, 4242)
    app = a.app
    status, _, body = get(app, "/pptp-alg/gateways")
    listing = json.loads(body)
    assert status == "200 OK" and listing["switches_refused"] == 0
    assert [(g["name"], g["bridge"], g["datapath_id"], g["ready"])
            for g in listing["gateways"]] == [("a", "br-a", "000000000000000a", True),
                                              ("b", "br-b", "000000000000000b", True)]
    calls = {name: json.loads(get(app, f"/pptp-alg/gateways/{name}/calls")[2])
             for name in ("a", "b")}
    assert [c["client_call_id"] for c in calls["a"]] == [4242] and calls["b"] == []
    text = get(app, "/pptp-alg/gateways/a/display/server-map")[2].decode()
    assert "192.168.1.1:4242" in text
    status, _, body = get(app, "/pptp-alg/calls")
    assert status == "404 Not Found" and "several gateways (a, b)" in json.loads(body)["error"]
    samples = scrape(app)
    assert samples[("pptp_alg_calls_set_up_total", (("gateway", "a"),))] == 1
    assert samples[("pptp_alg_calls_set_up_total", (("gateway", "b"),))] == 0
    assert samples[("pptp_alg_switches_refused_total", ())] == 0
