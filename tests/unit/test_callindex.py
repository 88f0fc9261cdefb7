"""The established calls by GRE key (``alg.callindex``), as the server-map keeps it: every
lookup agrees with a scan of the live calls however calls are set up, end and restore,
and an ICMP error quoting GRE finds its call through it."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, IPerror

from alg.callid import CallIdAllocator
from alg.callindex import GreCallIndex
from alg.calls import Call, CallState, ConnectionCalls
from alg.codec import GreHeader
from alg.counters import Counters
from alg.events import Direction, IcmpMessage, Output, SendIcmp
from alg.nat import NatSession, Proto
from alg.servermap import ServerMap
from alg.snapshot import Snapshot
from tests.unit.pptp_flows import C1, C2, PUBLIC, SERVER, ControlLink, config, gateway

CLIENTS = (IPv4Address("192.168.1.1"), IPv4Address("192.168.1.2"),
           IPv4Address("192.168.1.3"))
PUBLICS = (IPv4Address("203.0.113.2"), IPv4Address("203.0.113.3"))
ROUTER = IPv4Address("198.51.100.9")

Open = tuple[int, int, int, int]
"""Client, public address, a and c of a call to set up."""
Op = Open | int
"""A call to set up, or the position among the live calls of one to end."""

OPS = st.lists(st.one_of(
    st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 3), st.integers(0, 3)),
    st.integers(0, 30),
), max_size=40)


def scan_sent(live: list[Call], server: IPv4Address, public: IPv4Address, c: int
              ) -> Call | None:
    found = [x for x in live if (x.conn.server_ip, x.conn.public_ip, x.server_call_id)
             == (server, public, c)]
    return found[0] if len(found) == 1 else None


def scan_received(live: list[Call], client: IPv4Address, server: IPv4Address, a: int
                  ) -> Call | None:
    return next((x for x in live if (x.conn.client_ip, x.conn.server_ip, x.client_call_id)
                 == (client, server, a)), None)


@given(OPS)
def test_every_lookup_agrees_with_a_scan_of_the_live_calls(ops: list[Op]) -> None:
    cfg = config(public_ips=PUBLICS)
    ids = itertools.count(1)
    server_map = ServerMap(cfg, Counters(), CallIdAllocator(60.0), ids)
    live: list[Call] = []
    public_ids = itertools.count(100)
    for op in ops:
        if isinstance(op, tuple):
            client, public, a, c = op
            session = NatSession(next(ids), Proto.TCP, CLIENTS[client], 40000,
                                 PUBLICS[public], 40000, SERVER, 1723, 0.0, 0.0)
            call = Call(next(ids), ConnectionCalls(session), True, CallState.ESTABLISHED,
                        0.0, 0.0, a, next(public_ids), c)
            server_map.open(call, 0.0, Output())
            live.append(call)
        elif live:
            server_map.close(live.pop(op % len(live)), 0.0, Output())
        for public_ip, key in itertools.product(PUBLICS, range(4)):
            assert server_map.call_sent(public_ip, SERVER, key) is scan_sent(
                live, SERVER, public_ip, key)
        for client_ip, key in itertools.product(CLIENTS, range(4)):
            assert server_map.call_received(client_ip, SERVER, key) is scan_received(
                live, client_ip, SERVER, key)
    assert len(server_map._gre_keys) == len(live)


def test_the_index_forgets_a_call_once_and_keeps_the_others_of_its_key() -> None:
    index = GreCallIndex()
    session = NatSession(1, Proto.TCP, C1, 40000, PUBLIC, 40000, SERVER, 1723, 0.0, 0.0)
    conn = ConnectionCalls(session)
    first = Call(1, conn, True, CallState.ESTABLISHED, 0.0, 0.0, 5, 5, 900)
    second = Call(2, conn, True, CallState.ESTABLISHED, 0.0, 0.0, 5, 6, 900)
    index.add(first)
    index.add(second)
    assert index.sent(SERVER, PUBLIC, 900) == [first, second]
    index.remove(first)
    index.remove(first)
    assert index.sent(SERVER, PUBLIC, 900) == [second]
    assert index.received(C1, SERVER, 5) == [second] and len(index) == 1
    index.remove(second)
    assert index.sent(SERVER, PUBLIC, 900) == [] and len(index) == 0


def gre_error(c: int) -> IcmpMessage:
    """A router's error about client -> server GRE with key ``c`` from the public address."""
    quoted = IP(src=str(PUBLIC), dst=str(SERVER), proto=47) / GreHeader(0, c, 1).encode()
    return IcmpMessage(ROUTER, PUBLIC, bytes(ICMP(type=3, code=4) / bytes(quoted)))


def test_an_error_quoting_gre_finds_its_call_after_a_restore_and_not_after_its_end() -> None:
    gw = gateway()
    first, second = ControlLink(gw, C1).start(), ControlLink(gw, C2).start()
    first.outgoing_call(5, 700)
    second.outgoing_call(6, 701)
    snapshot = Snapshot()
    snapshot.apply(gw.journal.drain())
    new = gateway()
    new.restore(snapshot, {}, 10.0)
    [emit] = new.handle(Direction.INBOUND, gre_error(701), 11.0).emits
    assert isinstance(emit, SendIcmp) and emit.dst_ip == C2
    assert IPv4Address(IP(bytes(IP(dst=str(C2), proto=1) / emit.icmp))[IPerror].src) == C2
    [ending] = [c for c in new.calls() if c.conn.client_ip == C2]
    new.call_control.close(ending, 12.0, "Call-Clear-Request", Output())
    assert new.handle(Direction.INBOUND, gre_error(701), 12.0).emits == []
    assert new.counters.icmp_errors_unmatched == 1
    [emit] = new.handle(Direction.INBOUND, gre_error(700), 12.0).emits
    assert isinstance(emit, SendIcmp) and emit.dst_ip == C1
