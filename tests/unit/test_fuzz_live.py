"""Arbitrary frames through the app's packet-in handling and the core, a victim call checked
after every one.

The victim (client 192.168.1.1, Call ID 4242 kept, server Call ID 700) is set up first on
the app's core; then Hypothesis sends frames from every port: random bytes, and frames
shaped like the gateway's traffic (ARP, TCP to and from port 1723 with PPTP messages,
mutated or not, UDP, ICMP, GRE with any key), from and to the addresses of the lab. After
each frame nothing may have escaped the app, and the victim must be unharmed: its call
established with its three Call IDs, its control connection alive, and the server's GRE
for it delivered to it with its own Call ID.

``make test`` runs 10,000 frames, the same ones on every run (the suite's ``repeatable``
Hypothesis profile), after the explicit regression frames below;
``HYPOTHESIS_PROFILE=random FUZZ_EXAMPLES=100000`` (with ``--timeout=3600``) runs the
longer documented run, with new frames each time.
"""

from __future__ import annotations

import os
from functools import cache
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from alg.calls import Call, CallState
from alg.engine import Gateway
from alg.events import Direction, SendGre
from alg.snapshot import Snapshot
from ryu_apps import nat_gateway
from ryu_apps.nat_gateway import NatGateway
from tests.unit.app_env import (
    CLIENT,
    CLIENT_MAC,
    GW_MAC,
    IN1,
    IN2,
    OPTIONS,
    OUT,
    PORTS,
    PUBLIC,
    SERVER,
    SERVER_MAC,
)
from tests.unit.fake_switch import FakeDatapath
from tests.unit.pptp_flows import (
    ControlLink,
    ccrq,
    cdn,
    echo_request,
    gre,
    iccn,
    icrp,
    icrq,
    ocrp,
    ocrq,
    sccrp,
    sccrq,
    sli,
    stopccrq,
    wen,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10000"))
VICTIM = CLIENT
A, C = 4242, 700
ADDRESSES = ["192.168.1.1", "192.168.1.2", "192.168.1.254", "203.0.113.1", "203.0.113.2",
             "203.0.113.9", "10.0.0.1", "255.255.255.255", "224.0.0.1"]


class Victim:
    """The app, its fake switch and the victim call."""

    def __init__(self) -> None:
        nat_gateway.CONF = SimpleNamespace(nat=dict(OPTIONS))
        spawn = nat_gateway.hub.spawn
        nat_gateway.hub.spawn = lambda *_a, **_k: None
        try:
            self.app = NatGateway()
        finally:
            nat_gateway.hub.spawn = spawn
        self.app.now = lambda: 1000.0  # type: ignore[method-assign]
        self.dp = FakeDatapath()
        ports = [SimpleNamespace(name=n.encode(), port_no=no)
                 for n, no in PORTS]
        self.app._switch_features(SimpleNamespace(msg=SimpleNamespace(datapath=self.dp)))
        self.app._port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=self.dp, body=ports)))
        self.app._flow_stats(SimpleNamespace(msg=SimpleNamespace(
            xid=self.app.switch.reconcile_xid, body=[], flags=0, datapath=self.dp)))
        assert self.app.ready
        for port, mac, ip, target in ((IN1, CLIENT_MAC, VICTIM, "192.168.1.254"),
                                      (OUT, SERVER_MAC, SERVER, str(PUBLIC))):
            self.app.handle_frame(self.dp, port, bytes(
                Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=2, hwsrc=mac, psrc=str(ip), pdst=target)
            ))
        link = ControlLink(self.app.core, VICTIM, 40000, SERVER, now=1000.0).start()
        assert link.outgoing_call(A, C) == A
        [self.call] = self.app.core.calls()
        self.conn = self.app.core.connections()[0]
        self.stored = Snapshot()
        self.stored.apply(self.app.core.journal.drain())
        self.app.effects.store = SimpleNamespace(write=self.stored.apply)

    def check(self) -> None:
        call: Call = self.call
        assert call.state is CallState.ESTABLISHED
        assert (call.client_call_id, call.public_call_id, call.server_call_id) == (A, A, C)
        assert self.conn in self.app.core.connections()
        out = self.app.core.handle_gre(Direction.INBOUND, SERVER, PUBLIC, gre(A), 1000.0)
        [sent] = [e for e in out.emits if isinstance(e, SendGre)]
        assert sent.dst_ip == VICTIM and sent.gre[6:8] == A.to_bytes(2, "big")
        self.dp.sent.clear()
        # What the store holds restores the victim call too.
        restarted = Gateway(self.app.config.alg)
        restarted.restore(self.stored, {}, 1000.0)
        assert [(c.client_call_id, c.public_call_id, c.server_call_id, c.state)
                for c in restarted.calls() if c.conn.session.id == self.conn.session.id] == [
            (A, A, C, CallState.ESTABLISHED)]


@cache
def victim() -> Victim:
    return Victim()


MESSAGES = [sccrq(), sccrp(), stopccrq(), echo_request(), ocrq(A), ocrq(9), ocrp(C, A),
            ocrp(5, 9), icrq(C), icrp(A, C), iccn(A), ccrq(A), cdn(C), cdn(A), wen(A), sli(A)]


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["message", "mutated", "cut", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    data = b"".join(draw(st.lists(st.sampled_from(MESSAGES), min_size=1, max_size=3)))
    if kind == "mutated":
        index = draw(st.integers(0, len(data) - 1))
        data = data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1:]
    elif kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    return data


addresses = st.sampled_from(ADDRESSES)
ports = st.one_of(st.just(1723), st.just(40000), st.integers(0, 65535))
seqs = st.one_of(st.integers(0, (1 << 32) - 1), st.sampled_from([0, 1, 1001, 900001]))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["raw", "arp", "tcp", "udp", "icmp", "gre", "ip"]))
    if kind == "raw":
        return draw(st.binary(max_size=200))
    mac = draw(st.sampled_from(["0a:00:00:00:00:01", "0a:00:00:00:00:02",
                                "0a:00:00:00:00:64", "0a:00:00:00:00:66"]))
    ether = Ether(src=mac, dst=draw(st.sampled_from([GW_MAC, "ff:ff:ff:ff:ff:ff"])))
    if kind == "arp":
        return bytes(ether / ARP(op=draw(st.integers(0, 3)), hwsrc=mac, psrc=draw(addresses),
                                 pdst=draw(addresses)))
    ip = IP(src=draw(addresses), dst=draw(addresses), ttl=draw(st.integers(0, 255)),
            flags=draw(st.sampled_from([0, 1, 2])), frag=draw(st.sampled_from([0, 0, 3])))
    if kind == "tcp":
        layer: Any = TCP(sport=draw(ports), dport=draw(ports), seq=draw(seqs), ack=draw(seqs),
                         flags=draw(st.integers(0, 0x3F)), window=draw(st.integers(0, 65535)))
        return bytes(ether / ip / layer / Raw(draw(payloads())))
    if kind == "udp":
        return bytes(ether / ip / UDP(sport=draw(ports), dport=draw(ports))
                     / Raw(draw(st.binary(max_size=50))))
    if kind == "icmp":
        return bytes(ether / ip / ICMP(type=draw(st.integers(0, 20)), id=draw(ports)))
    if kind == "gre":
        ip.proto = 47
        key = draw(st.one_of(st.just(A), st.integers(0, 65535)))
        return bytes(ether / ip / Raw(draw(st.one_of(
            st.just(gre(key)), st.binary(max_size=40)))))
    ip.proto = draw(st.integers(0, 255))
    return bytes(ether / ip / Raw(draw(st.binary(max_size=40))))


NEW_SYN_FROM_VICTIM = bytes(
    Ether(src=CLIENT_MAC, dst=GW_MAC) / IP(src=str(VICTIM), dst=str(SERVER))
    / TCP(sport=40000, dport=1723, seq=900001, flags="S")
)
"""A SYN from the victim's own address and port with a new ISN: before the fix it ended
the victim's connection and call (``end_reason='reopened'``)."""

@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(port=st.sampled_from([IN1, IN2, OUT, 7]), frame=frames())
@example(port=IN1, frame=NEW_SYN_FROM_VICTIM)
@example(port=1, frame=b"\x00")
def test_no_frame_escapes_the_app_or_harms_the_victim_call(port: int, frame: bytes) -> None:
    v = victim()
    v.app.handle_frame(v.dp, port, frame)
    v.check()
