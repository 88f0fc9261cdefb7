"""The operator's view: the seed's display layout from live gateway state."""

from __future__ import annotations

import re
from ipaddress import IPv4Address

from alg import display
from alg.events import Direction, EntryKind, GreOutboundEntry
from tests.unit.pptp_flows import C1, C2, SERVER, ControlLink, down_gre, gateway, ocrq, up_gre


def test_left_time_format() -> None:
    assert display.left_time(189) == "00:03:09"
    assert display.left_time(3600 * 2 + 61.9) == "02:01:01"
    assert display.left_time(-5) == "00:00:00"


def test_server_map_shows_both_entries_of_each_call_in_the_seed_layout() -> None:
    gw = gateway(gre_idle=300)
    one = ControlLink(gw, C1, 40000).start()
    b1 = one.outgoing_call(a=7, c=128)
    two = ControlLink(gw, C2, 40001).start()
    b2 = two.outgoing_call(a=7, c=256)
    assert b1 == 7 and b2 != 7
    public = one.public_ip
    entries = display.server_map(gw, now=111)
    text = display.render(entries)
    assert text.splitlines()[:3] == [
        f"Type: ASPF, {SERVER}:0 -> {public}:7[{C1}:7], Zone: ---",
        "   Protocol: tcp(Appro: pptp-gre), Left-Time: 00:03:09",
        "   VPN: public -> public",
    ]
    assert f"Type: ASPF, {C1}:0[{public}] -> {SERVER}:128, Zone: ---" in text
    assert f"Type: ASPF, {SERVER}:0 -> {public}:{b2}[{C2}:7], Zone: ---" in text
    assert f"Type: ASPF, {C2}:0[{public}] -> {SERVER}:256, Zone: ---" in text
    assert len(entries) == 4
    assert {e.path for e in entries if e.direction == "server-to-client"} == {"controller"}
    assert {e.path for e in entries if e.direction == "client-to-server"} == {"flow"}
    verbose = display.render(entries, verbose=True)
    assert "   Path: controller, Packets: 0" in verbose


def test_left_time_counts_down_and_restarts_with_traffic() -> None:
    gw = gateway(gre_idle=300)
    link = ControlLink(gw).start()
    b = link.outgoing_call(a=9, c=5)
    first = display.server_map(gw, now=10)[0].left_seconds
    later = display.server_map(gw, now=70)[0].left_seconds
    assert first - later == 60
    assert link.public_ip is not None
    down_gre(gw, link.public_ip, b, now=70)
    assert display.server_map(gw, now=70)[0].left_seconds == 300
    up_id = next(d.entry_id for out in link.outputs for d in out.decisions
                 if isinstance(d, GreOutboundEntry))
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up_id, 5, now=100)
    assert display.server_map(gw, now=100)[0].left_seconds == 300


def test_a_requested_call_has_only_its_first_server_map_entry() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.client_send(ocrq(33))
    entries = display.server_map(gw, now=0)
    assert [e.direction for e in entries] == ["server-to-client"]
    assert entries[0].path is None and entries[0].server_call_id is None


def test_session_table_shows_control_gre_and_napt_sessions() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    b = link.outgoing_call(a=12, c=128)
    public = link.public_ip
    assert public is not None
    text = display.render(display.session_table(gw, now=1))
    assert text.splitlines() == [
        f"   pptp  VPN:public --> public {C1}:40000[{public}:{link.public_port}]"
        f" +-> {SERVER}:1723"
    ]
    down_gre(gw, public, b, now=2)
    up_gre(gw, C1, 128, now=2)
    gw.handle_udp(Direction.OUTBOUND, C2, 5353, SERVER, 53, now=3)
    gw.handle_icmp_echo(Direction.OUTBOUND, C2, SERVER, 77, True, now=3)
    entries = display.session_table(gw, now=4)
    lines = display.render(entries).splitlines()
    assert f"   pptp-gre  VPN:public --> public {SERVER}:0 --> {public}:{b}[{C1}:12]" in lines
    assert f"   pptp-gre  VPN:public --> public {C1}:0[{public}:0] --> {SERVER}:128" in lines
    assert f"   udp  VPN:public --> public {C2}:5353[{public}:5353] --> {SERVER}:53" in lines
    assert f"   icmp  VPN:public --> public {C2}:77[{public}:77] --> {SERVER}" in lines
    verbose = display.render(entries, verbose=True)
    assert re.search(r"Packets: 1, Bytes: \d+, Path: flow", verbose)
    as_json = display.as_json(entries)
    assert {e["protocol"] for e in as_json} == {"pptp", "pptp-gre", "udp", "icmp"}


def test_alg_off_gre_binding_is_shown_as_plain_gre() -> None:
    gw = gateway(alg_enabled=False)
    gw.handle_gre(Direction.OUTBOUND, C1, SERVER, b"", now=0)
    lines = display.render(display.session_table(gw, now=1)).splitlines()
    assert lines == [
        f"   gre  VPN:public --> public {C1}:0[{IPv4Address('203.0.113.2')}:0] --> {SERVER}:0"
    ]
