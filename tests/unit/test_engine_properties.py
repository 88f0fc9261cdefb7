"""Property tests of the gateway's control-connection handling (hypothesis).

(a) A realistic dialogue cut into segments anywhere, reordered a little and with repeated
    segments, gives the same streams, decisions and logs as the dialogue fed whole.
(b) Arbitrary bytes on an established control connection never raise out of the gateway;
    they are passed, or counted and reset, and other connections are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alg.calls import CallState
from alg.codec import ControlMessage
from alg.engine import Gateway
from alg.events import TCP_FIN, CallLog, Decision
from tests.unit.pptp_flows import (
    C1,
    C2,
    DATA,
    ControlLink,
    Peer,
    all_decisions,
    all_logs,
    ccrq,
    cdn,
    cuts,
    echo_reply,
    echo_request,
    gateway,
    iccn,
    icrp,
    icrq,
    messages,
    ocrp,
    ocrq,
    sli,
    stopccrp,
    stopccrq,
    wen,
)
from tests.unit.test_codec import SPECS
from tests.unit.test_codec_properties import message_strategy

# C2 holds Call IDs 1 and 2 on the pair, so C1's calls 1, 2, 3 and 4 get b = 3, 4, 5, 6.
B = {1: 3, 2: 4, 3: 5, 4: 6}

# (sender, bytes) phases of C1's dialogue; the server's messages use the b values above.
PHASES: list[tuple[str, bytes]] = [
    ("client", ocrq(1) + ocrq(2, serial=2) + echo_request(1) + ocrq(3, serial=3)),
    ("server", echo_reply(1) + ocrp(100, B[1]) + ocrp(101, B[2]) + ocrp(102, B[3], result=4)
     + sli(B[1]) + wen(B[2]) + icrq(200)),
    ("client", sli(100) + icrp(4, 200) + ccrq(1) + sli(101)),
    ("server", iccn(B[4]) + cdn(101) + cdn(B[1]) + sli(B[4])),
    ("client", ccrq(4) + stopccrq()),
    ("server", stopccrp() + cdn(B[3])),
]


def _world() -> tuple[Gateway, ControlLink, ControlLink]:
    gw = gateway()
    other = ControlLink(gw, C2, 40001).start()
    other.outgoing_call(1, 50)
    other.outgoing_call(2, 51)
    link = ControlLink(gw, C1).start()
    return gw, other, link


@dataclass
class Result:
    client: bytes
    server: bytes
    decisions: list[Decision]
    logs: list[CallLog]
    counters: dict[str, int]
    conflicts: list[int]


Plan = list[list[tuple[int, bytes]]]


def _run(plan: Plan) -> Result:
    gw, _, link = _world()
    start = len(link.outputs)
    for (who, _), pieces in zip(PHASES, plan, strict=True):
        sender: Peer = link.client if who == "client" else link.server
        base = link.sent(sender)
        end = base
        for offset, piece in pieces:
            link.send(sender, piece, seq=link.seq_at(sender, base + offset))
            end = max(end, base + offset + len(piece))
        sender.snd_nxt = link.seq_at(sender, end)
    counters = gw.counters.as_dict()
    counters.pop("retransmitted_segments")
    outputs = link.outputs[start:]
    return Result(
        link.client.stream, link.server.stream, all_decisions(outputs), all_logs(outputs),
        counters, link.client.conflicts + link.server.conflicts,
    )


WHOLE = _run([[(0, data)] for _, data in PHASES])


def test_the_dialogue_fed_whole_does_what_the_table_says() -> None:
    to_server = messages(WHOLE.server)
    to_client = messages(WHOLE.client)
    assert [getattr(m, "call_id", None) for m in to_server[1:4]] == [3, 4, None]
    assert ocrq(3, serial=3).replace(b"\x00\x03\x00\x03", b"\x00\x05\x00\x03") in WHOLE.server
    assert ocrp(100, 1) in WHOLE.client and ocrp(101, 2) in WHOLE.client
    assert sli(1) in WHOLE.client and wen(2) in WHOLE.client and icrp(6, 200) in WHOLE.server
    assert iccn(4) in WHOLE.client and cdn(101) in WHOLE.client and cdn(1) in WHOLE.client
    assert ccrq(3) in WHOLE.server and ccrq(6) in WHOLE.server and cdn(3) in WHOLE.client
    assert [log.event for log in WHOLE.logs] == [
        "set up", "set up", "torn down", "set up", "torn down", "torn down"]
    assert WHOLE.counters["unknown_call_ids"] == 0 and WHOLE.conflicts == []
    assert WHOLE.counters["connections_reset"] == 0
    assert len(to_client) == 1 + 7 + 4 + 2 and len(to_server) == 1 + 4 + 4 + 2


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    plan: Plan = []
    for _, data in PHASES:
        points = draw(st.lists(st.integers(1, len(data) - 1), max_size=12))
        pieces = cuts(data, points)
        for i in draw(st.lists(st.integers(0, max(0, len(pieces) - 2)), max_size=4)):
            if i + 1 < len(pieces):
                pieces[i], pieces[i + 1] = pieces[i + 1], pieces[i]
        for i in draw(st.lists(st.integers(0, len(pieces) - 1), max_size=3)):
            pieces.insert(draw(st.integers(i + 1, len(pieces))), pieces[i])
        plan.append(pieces)
    return plan


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_any_segmentation_gives_the_same_streams_and_decisions(plan: Plan) -> None:
    result = _run(plan)
    assert result.conflicts == []
    assert result.server == WHOLE.server
    assert result.client == WHOLE.client
    assert result.decisions == WHOLE.decisions
    assert result.logs == WHOLE.logs
    assert result.counters == WHOLE.counters


# (b) Arbitrary bytes.

def _valid_messages() -> st.SearchStrategy[bytes]:
    one = st.sampled_from(SPECS).flatmap(message_strategy).map(ControlMessage.encode)
    return st.lists(one, min_size=1, max_size=3).map(b"".join)


def _header_then_junk() -> st.SearchStrategy[bytes]:
    return st.tuples(st.sampled_from(SPECS), st.binary(max_size=220)).map(
        lambda t: t[0].length.to_bytes(2, "big") + b"\x00\x01\x1a\x2b\x3c\x4d"
        + t[0].ctype.to_bytes(2, "big") + b"\x00\x00" + t[1]
    )


JUNK = st.one_of(st.binary(min_size=1, max_size=400), _valid_messages(), _header_then_junk())


def _other_still_works(gw: Gateway, other: ControlLink) -> None:
    calls = [c for c in gw.calls() if c.conn.client_ip == C2]
    assert [c.state for c in calls] == [CallState.ESTABLISHED] * 2
    other.client_send(ccrq(2))
    assert other.server.stream.endswith(ccrq(2))
    other.server_send(sli(1))
    assert other.client.stream.endswith(sli(1))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JUNK, st.sampled_from(["client", "server"]),
       st.lists(st.integers(1, 399), max_size=5), st.booleans())
def test_arbitrary_payload_never_raises_and_stays_on_its_connection(
    junk: bytes, who: str, points: list[int], fin: bool
) -> None:
    gw, other, link = _world()
    link.outgoing_call(1, 100)
    sender = link.client if who == "client" else link.server
    pieces = cuts(junk, points)
    for i, (_, piece) in enumerate(pieces):
        last = i == len(pieces) - 1
        link.send(sender, piece, flags=DATA | (TCP_FIN if fin and last else 0))
    c = gw.counters
    errors = c.malformed_messages + c.unexpected_messages + c.truncated_messages
    errors += c.allocation_failures
    assert c.connections_reset <= errors
    if c.connections_reset:
        assert link.reset_received() == (True, True) and link.resets_acceptable()
        assert [conn.session.inside_ip for conn in gw.connections()] == [C2]
    assert link.client.conflicts == [] and link.server.conflicts == []
    _other_still_works(gw, other)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(0, (1 << 32) - 1))
def test_arbitrary_sequence_numbers_never_raise(junk: bytes, seq: int) -> None:
    gw, other, link = _world()
    link.send(link.client, junk, seq=seq)
    link.send(link.server, junk, seq=seq)
    _other_still_works(gw, other)
