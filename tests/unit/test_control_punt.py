"""Each control connection's own punt entry (``alg.events.ControlEntry``).

The server's segments of a live control connection reach the controller through an
exact-match entry and the meter of the client's inside port for control connections;
every other segment from port 1723 outside shares one metered entry. So a flood of
segments that look like a server's, to public ports no connection holds, exhausts only
the shared meter. The core, then the app on the fake switch with its meters enforced.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from alg.codec import HEADER_LENGTH
from alg.events import TCP_ACK, TCP_SYN, ControlEntry, Direction, EntryKind, RemoveEntries
from ryu_apps import switch
from ryu_apps.framework import ofproto_v1_3_parser as parser
from ryu_apps.nat_gateway import NatGateway
from tests.unit.app_env import GW_MAC, IN1, IN2, OUT, PUBLIC, SERVER, SERVER_MAC
from tests.unit.pptp_flows import C1, ControlLink, gateway
from tests.unit.test_closed_loop import Lab, build_lab, check_clean

FLOOD = 400
"""Junk segments per flood (bounded; the shared meter below lets 10 pass)."""
SHARED_RATE = 20
"""punt_rate_outside_control in the closed-loop tests (burst: half of it)."""


def control_entries(decisions: list[object]) -> list[object]:
    return [d for d in decisions if isinstance(d, ControlEntry)
            or (isinstance(d, RemoveEntries) and d.kind is EntryKind.CONTROL)]


# The core.

def test_a_connection_gets_its_entry_on_its_syn_and_loses_it_with_an_rst() -> None:
    gw = gateway()
    link = ControlLink(gw)
    syn = link.send(link.client, flags=TCP_SYN, ack=0)
    [conn] = gw.connections()
    assert control_entries(syn.decisions) == [ControlEntry(conn.session)]
    link.send(link.server, flags=TCP_SYN | TCP_ACK, ack=link.client.isn + 1)
    link.send(link.client, flags=TCP_ACK)
    assert all(control_entries(o.decisions) == [] for o in link.outputs[1:])
    out = link.rst(link.client)
    assert control_entries(out.decisions) == [RemoveEntries(EntryKind.CONTROL, conn.session.id)]


@pytest.mark.parametrize("how", ["reset", "handshake", "idle"])
def test_the_entry_goes_however_its_connection_ends(how: str) -> None:
    gw = gateway(tcp_idle=100.0, tcp_handshake=30.0)
    link = ControlLink(gw)
    if how == "handshake":
        link.send(link.client, flags=TCP_SYN, ack=0)
        [conn] = gw.connections()
        out = gw.tick(31.0)
    else:
        link.start()
        [conn] = gw.connections()
        if how == "reset":
            out = link.client_send(b"\x00" * HEADER_LENGTH)  # a malformed header
            assert gw.counters.connections_reset == 1
        else:
            out = gw.tick(101.0)
    assert gw.connections() == []
    assert control_entries(out.decisions) == [RemoveEntries(EntryKind.CONTROL, conn.session.id)]


def test_a_refused_connection_gets_no_entry() -> None:
    gw = gateway(max_connections_per_host=1)
    ControlLink(gw).start()
    other = ControlLink(gw, client_port=40001)
    refused = other.send(other.client, flags=TCP_SYN, ack=0)
    assert control_entries(refused.decisions) == []
    assert gw.counters.refused_connections == 1


def test_reconcile_puts_back_missing_entries_and_removes_those_of_no_connection() -> None:
    gw = gateway()
    ControlLink(gw).start()
    ControlLink(gw, client_port=40001).start()
    first, second = (c.session for c in gw.connections())
    stale = second.id + 50
    out = gw.reconcile({(EntryKind.CONTROL, first.id): 1, (EntryKind.CONTROL, stale): 1})
    assert control_entries(out.decisions) == [
        ControlEntry(second), RemoveEntries(EntryKind.CONTROL, stale)]
    assert control_entries(gw.reconcile({(EntryKind.CONTROL, first.id): 1,
                                         (EntryKind.CONTROL, second.id): 1}).decisions) == []
    # A control entry's id is a session's: new sessions take ids above it.
    ControlLink(gw, client_port=40002).start()
    assert gw.connections()[-1].session.id > stale


def test_the_switchs_reports_of_a_control_entry_touch_nothing_else() -> None:
    gw = gateway(alg_enabled=False)
    out = gw.handle_gre(Direction.OUTBOUND, C1, SERVER, b"\x30\x01\x88\x0b\0\0\0\x07", 0.0)
    [binding] = gw.plain_gre()
    assert out.decisions
    seen = binding.last_seen
    for entry_id in (binding.outbound_id, binding.inbound_id):
        gw.flow_stats(EntryKind.CONTROL, entry_id, 5, 50.0)
        gw.flow_removed(EntryKind.CONTROL, entry_id, 5)
    assert binding.last_seen == seen
    assert (binding.outbound_packets, binding.inbound_packets) == (0, 0)


# The app on the fake switch, meters enforced.

@pytest.fixture
def metered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    lab = build_lab(monkeypatch, punt_rate_outside_control=SHARED_RATE,
                    state_file=str(tmp_path / "state.sqlite"))
    lab.switch.metering = True
    return lab


def junk(ports: list[int]) -> list[bytes]:
    """Segments from the server's address and port 1723 to the public address, to
    ``ports``: what an off-path host sends without knowing the connections' ports."""
    return [bytes(Ether(src=SERVER_MAC, dst=GW_MAC)
                  / IP(src=str(SERVER), dst=str(PUBLIC))
                  / TCP(sport=1723, dport=port, flags="PA", seq=7, ack=9) / Raw(b"\0" * 16))
            for port in ports]


def random_ports(avoid: set[int], seed: int = 18) -> list[int]:
    draw = random.Random(seed)
    ports: list[int] = []
    while len(ports) < FLOOD:
        port = draw.randrange(1024, 65536)
        if port not in avoid:
            ports.append(port)
    return ports


def live_ports(lab: Lab) -> set[int]:
    return {c.session.public_port for c in lab.app.core.connections()}


def test_a_flood_like_a_servers_segments_leaves_live_control_connections_their_share(
    metered: Lab,
) -> None:
    lab = metered
    victim = lab.open_control(lab.client1)
    for frame in junk(random_ports(live_ports(lab))):
        lab.switch.inject(OUT, frame)
    call = victim.call(4242)  # queued behind the flood
    lab.settle()
    assert call.result_code == 1 and call.server_call_id is not None
    shared = switch.METER_OUTSIDE_CONTROL
    assert lab.switch.meter_drops[shared] == FLOOD - SHARED_RATE // 2
    victim.echo(77)
    lab.settle()
    assert [type(m).__name__ for m in victim.messages] == [
        "StartControlConnectionReply", "OutgoingCallReply", "EchoReply"]

    # A connection opened during a flood is set up too: the server's SYN-ACK already
    # meets the new connection's own entry.
    for frame in junk(random_ports(live_ports(lab), seed=19)):
        lab.switch.inject(OUT, frame)
    newcomer = lab.open_control(lab.client2, 40001)
    assert newcomer.messages and lab.app.core.counters.connections_reset == 0
    assert sum(lab.switch.meter_drops.values()) == lab.switch.meter_drops[shared]
    first, second = lab.app.core.connections()
    for link, conn, port in ((victim, first, IN1), (newcomer, second, IN2)):
        [entry] = lab.switch.entries(tcp_src=1723, tcp_dst=link.conn.local_port)
        assert entry.meter == switch.METER_CONTROL_CONNECTIONS + port
        assert switch.decode_cookie(entry.cookie) == (EntryKind.CONTROL, conn.session.id)
    check_clean(lab)


def test_the_flood_starved_live_connections_through_the_shared_entry(metered: Lab) -> None:
    """What the entries fix: with a live connection's own entry gone, its server's
    segments meet the flood in the shared meter and are lost."""
    lab = metered
    victim = lab.open_control(lab.client1)
    [entry] = lab.switch.entries(tcp_src=1723, tcp_dst=victim.conn.local_port)
    lab.switch.table.remove(entry)
    for frame in junk(random_ports(live_ports(lab))):
        lab.switch.inject(OUT, frame)
    call = victim.call(4242)
    lab.settle()
    assert call.result_code is None
    assert lab.pac.calls  # the server answered; the answer was dropped by the meter


def test_control_entries_outlive_a_controller_restart_and_come_back_after_a_switch_restart(
    metered: Lab,
) -> None:
    lab = metered
    links = [lab.open_control(lab.client1), lab.open_control(lab.client2, 40001)]
    cookies = {e.cookie for e in lab.switch.table
               if (switch.decode_cookie(e.cookie) or (None,))[0] is EntryKind.CONTROL}
    assert len(cookies) == 2
    assert lab.app.store is not None
    lab.app.store.close()
    lab.switch.sent.clear()
    app = NatGateway()
    app.now = lab.clock  # type: ignore[method-assign]
    lab.app = app
    lab.switch.connect(app)
    lab.settle()
    lab.switch.errors.clear()  # the meters' ADDs, refused as expected
    adds = [m for m in lab.switch.sent if isinstance(m, parser.OFPFlowMod)
            and (switch.decode_cookie(m.cookie) or (None,))[0] is EntryKind.CONTROL]
    assert adds == []
    assert {e.cookie for e in lab.switch.table
            if (switch.decode_cookie(e.cookie) or (None,))[0] is EntryKind.CONTROL} == cookies

    lab.switch.table.clear()
    lab.switch.meters.clear()
    lab.switch.connect(app)
    lab.settle()
    # This controller has not heard the clients yet: it cannot name their ports' meters,
    # and places each entry when its client speaks.
    assert app.counters.entries_not_installed == 2
    assert not any((switch.decode_cookie(e.cookie) or (None,))[0] is EntryKind.CONTROL
                   for e in lab.switch.table)
    for number, link in enumerate(links):
        link.echo(number)
        lab.settle()
    back = {e.cookie: e for e in lab.switch.table
            if (switch.decode_cookie(e.cookie) or (None,))[0] is EntryKind.CONTROL}
    assert set(back) == cookies
    assert {e.meter for e in back.values()} == {switch.METER_CONTROL_CONNECTIONS + IN1,
                                                switch.METER_CONTROL_CONNECTIONS + IN2}
    check_clean(lab)


def test_the_entry_leaves_the_switch_with_its_connection(metered: Lab) -> None:
    lab = metered
    link = lab.open_control(lab.client1)
    assert lab.switch.entries(tcp_src=1723, tcp_dst=link.conn.local_port)
    link.conn.abort()
    lab.settle()
    assert lab.app.core.connections() == []
    assert lab.switch.entries(tcp_src=1723, tcp_dst=link.conn.local_port) == []
    check_clean(lab)

