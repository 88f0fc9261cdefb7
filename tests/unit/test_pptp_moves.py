"""The call state machine against the moves it declares (``CallControl.MOVES``).

Every function of the machine's table is driven from every state a call can be in (and
with no call), by each message it handles, with the IDs of the call or unknown ones and
each result code that matters. Every call whose state a function changed, or that it
made, must be in a state the function declares, none leaves CLOSED, and together the
cases must reach every state each function declares.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from alg.calls import Call, CallState, ConnectionCalls
from alg.codec import (
    CallClearRequest,
    CallDisconnectNotify,
    ControlMessage,
    EchoReply,
    EchoRequest,
    IncomingCallConnected,
    IncomingCallReply,
    IncomingCallRequest,
    OutgoingCallReply,
    OutgoingCallRequest,
    SetLinkInfo,
    StartControlConnectionReply,
    StartControlConnectionRequest,
    StopControlConnectionReply,
    StopControlConnectionRequest,
    WanErrorNotify,
)
from alg.events import Direction, Output
from alg.pptp import CallControl, Handler
from tests.unit.pptp_flows import (
    ControlLink,
    ccrq,
    cdn,
    echo_reply,
    echo_request,
    gateway,
    iccn,
    icrp,
    icrq,
    ocrp,
    ocrq,
    sccrp,
    sccrq,
    sli,
    stopccrp,
    stopccrq,
    wen,
)

OUT, IN = Direction.OUTBOUND, Direction.INBOUND
A, C, OTHER = 7, 70, 999
"""The client's and the server's Call IDs of the call set up, and an ID no call has."""


@dataclass(frozen=True)
class Ids:
    """The Call IDs the messages carry: the call's ``a``, ``b`` and ``c``."""

    a: int
    b: int
    c: int


def no_call(link: ControlLink) -> Ids:
    return Ids(A, A, C)


def requested(link: ControlLink) -> Ids:
    link.client_send(ocrq(A))
    return Ids(A, link.call_id_to_server(), C)


def offered(link: ControlLink) -> Ids:
    link.server_send(icrq(C))
    return Ids(A, A, C)


def answered(link: ControlLink) -> Ids:
    link.server_send(icrq(C))
    link.client_send(icrp(A, C))
    return Ids(A, link.call_id_to_server(), C)


def established_outgoing(link: ControlLink) -> Ids:
    return Ids(A, link.outgoing_call(A, C), C)


def established_incoming(link: ControlLink) -> Ids:
    return Ids(A, link.incoming_call(C, A), C)


def closed(link: ControlLink) -> Ids:
    b = link.outgoing_call(A, C)
    link.client_send(ccrq(A))
    return Ids(A, b, C)


STARTS: dict[str, Callable[[ControlLink], Ids]] = {
    "no call": no_call, "requested": requested, "offered": offered, "answered": answered,
    "established outgoing": established_outgoing,
    "established incoming": established_incoming, "closed": closed,
}
"""How to bring a started connection's call to each state it can be in."""

Build = Callable[[Ids], bytes]

MESSAGES: dict[tuple[type[ControlMessage], Direction], list[Build]] = {
    (StartControlConnectionRequest, OUT): [lambda i: sccrq()],
    (StartControlConnectionRequest, IN): [lambda i: sccrq()],
    (StartControlConnectionReply, OUT): [lambda i: sccrp()],
    (StartControlConnectionReply, IN): [lambda i: sccrp()],
    (EchoRequest, OUT): [lambda i: echo_request()],
    (EchoRequest, IN): [lambda i: echo_request()],
    (EchoReply, OUT): [lambda i: echo_reply()],
    (EchoReply, IN): [lambda i: echo_reply()],
    (StopControlConnectionRequest, OUT): [lambda i: stopccrq()],
    (StopControlConnectionRequest, IN): [lambda i: stopccrq()],
    (StopControlConnectionReply, OUT): [lambda i: stopccrp()],
    (StopControlConnectionReply, IN): [lambda i: stopccrp()],
    (SetLinkInfo, OUT): [lambda i: sli(i.c)],
    (SetLinkInfo, IN): [lambda i: sli(i.b), lambda i: sli(OTHER)],
    (OutgoingCallRequest, OUT): [lambda i: ocrq(i.a), lambda i: ocrq(OTHER)],
    (IncomingCallReply, OUT): [
        lambda i: icrp(i.a, i.c), lambda i: icrp(i.a, i.c, result=3),
        lambda i: icrp(OTHER, i.c), lambda i: icrp(i.a, OTHER),
    ],
    (CallClearRequest, OUT): [lambda i: ccrq(i.a), lambda i: ccrq(OTHER)],
    (OutgoingCallReply, IN): [
        lambda i: ocrp(i.c, i.b), lambda i: ocrp(i.c, i.b, result=2),
        lambda i: ocrp(i.c, OTHER),
    ],
    (IncomingCallRequest, IN): [lambda i: icrq(i.c), lambda i: icrq(OTHER)],
    (IncomingCallConnected, IN): [lambda i: iccn(i.b), lambda i: iccn(OTHER)],
    (CallDisconnectNotify, IN): [
        lambda i: cdn(i.c), lambda i: cdn(i.b), lambda i: cdn(OTHER),
    ],
    (WanErrorNotify, IN): [lambda i: wen(i.b), lambda i: wen(OTHER)],
}
"""Each (message, direction) of the machine's table, with the IDs of the call or others,
and each result code the machine tells apart."""


@dataclass(frozen=True)
class Move:
    """A call a function made (``before`` None), or whose state it changed."""

    case: str
    function: str
    before: CallState | None
    state: CallState


def handlers(control: CallControl) -> dict[tuple[type[ControlMessage], Direction], Handler]:
    """The machine's table of functions."""
    return control._handlers


def watched(function: Handler, ran: list[str], moves: list[Move], case: str) -> Handler:
    """``function``, noting that it ran and each call it made or moved."""
    def run(calls: ConnectionCalls, message: Any, now: float, out: Output) -> ControlMessage:
        ran.append(function.__name__)
        before = {id(c): (c, c.state) for c in [*calls, *calls.closed]}
        try:
            return function(calls, message, now, out)
        finally:
            after: dict[int, Call] = {id(c): c for c, _ in before.values()}
            after.update({id(c): c for c in [*calls, *calls.closed]})
            for key, call in after.items():
                old = before[key][1] if key in before else None
                if old is not call.state:
                    moves.append(Move(case, function.__name__, old, call.state))
    return run


def drive(start: str, key: tuple[type[ControlMessage], Direction], variant: int
          ) -> list[Move]:
    """One case: a call brought to ``start``, then one message of the table (its
    function must run)."""
    link = ControlLink(gateway()).start()
    ids = STARTS[start](link)
    ran: list[str] = []
    moves: list[Move] = []
    table = handlers(link.gw.call_control)
    function = table[key].__name__
    case = f"{key[0].__name__} {key[1].value}, variant {variant}, from {start}"
    for each_key, each in list(table.items()):
        table[each_key] = watched(each, ran, moves, case)
    payload = MESSAGES[key][variant](ids)
    if key[1] is OUT:
        link.client_send(payload)
    else:
        link.server_send(payload)
    assert ran == [function], case
    return moves


def cases() -> Iterator[tuple[str, tuple[type[ControlMessage], Direction], int]]:
    for start in STARTS:
        for key, variants in MESSAGES.items():
            for variant in range(len(variants)):
                yield start, key, variant


@functools.cache
def every_move() -> tuple[Move, ...]:
    return tuple(move for case in cases() for move in drive(*case))


def test_every_function_of_the_table_declares_its_moves() -> None:
    control = gateway().call_control
    assert {f.__name__ for f in handlers(control).values()} == set(CallControl.MOVES)
    assert set(handlers(control)) == set(MESSAGES)


def test_every_move_is_one_its_function_declares() -> None:
    wrong = [m for m in every_move() if m.state not in CallControl.MOVES[m.function]]
    assert wrong == []


def test_no_function_moves_a_call_out_of_closed() -> None:
    assert [m for m in every_move() if m.before is CallState.CLOSED] == []


def test_every_declared_move_happens() -> None:
    seen: dict[str, set[CallState]] = {name: set() for name in CallControl.MOVES}
    for move in every_move():
        seen[move.function].add(move.state)
    assert seen == {name: set(states) for name, states in CallControl.MOVES.items()}
