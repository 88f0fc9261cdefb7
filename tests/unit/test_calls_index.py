"""The calls of one control connection, by each Call ID; the framer's contract."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from alg.calls import Call, CallState, ConnectionCalls
from alg.framer import Decide, PptpFramer, Release
from alg.nat import NatSession, Proto
from tests.unit.pptp_flows import ccrq, echo_request, ocrq

SESSION = NatSession(
    1, Proto.TCP, IPv4Address("192.168.1.1"), 40000, IPv4Address("203.0.113.2"), 40000,
    IPv4Address("203.0.113.1"), 1723, 0.0, 0.0,
)


def call(calls: ConnectionCalls, index: int, a: int | None = None, b: int | None = None,
         c: int | None = None) -> Call:
    new = Call(index, calls, True, CallState.REQUESTED, 0.0, 0.0, a, b, c)
    calls.add(new)
    return new


def test_calls_are_found_by_each_id_and_the_oldest_live_one_wins() -> None:
    calls = ConnectionCalls(SESSION)
    first = call(calls, 1, a=5, b=5)
    second = call(calls, 2, a=5, b=6, c=700)
    assert calls.live("client", 5) is first and calls.live("public", 6) is second
    assert calls.live("server", 700) is second and calls.live("server", 5) is None
    calls.remove(first, keep=False)
    assert calls.live("client", 5) is second  # the other call with that ID is still found
    assert calls.recent("client", 5) is second and calls.closed == []
    assert [c.index for c in calls] == [2] and len(calls) == 1
    calls.remove(first, keep=True)  # not live any more: nothing happens
    assert calls.closed == []


def test_closed_calls_stay_findable_until_their_hold_down_ends() -> None:
    calls = ConnectionCalls(SESSION)
    old, new = call(calls, 1, a=5, b=5, c=9), call(calls, 2, a=5, b=6, c=9)
    old.hold_until, new.hold_until = 60.0, 70.0
    calls.remove(old, keep=True)
    calls.remove(new, keep=True)
    assert calls.live("server", 9) is None
    assert calls.recent("server", 9) is new  # the last closed one
    assert calls.recent("public", 5) is old
    calls.forget(60.0)
    assert calls.recent("public", 5) is None and calls.recent("server", 9) is new
    calls.forget(70.0)
    assert calls.recent("server", 9) is None and calls.closed == []
    assert (calls.client_ip, calls.public_ip, calls.server_ip) == (
        SESSION.inside_ip, SESSION.public_ip, SESSION.remote_ip
    )


def test_the_framer_asks_about_each_message_and_releases_what_is_decided() -> None:
    framer = PptpFramer()
    framer.feed(echo_request() + ocrq(4)[:20])
    assert framer.next_event() == Decide(echo_request())  # 16 bytes: all of it decides
    framer.decided(echo_request())
    assert framer.next_event() == Release(echo_request())
    event = framer.next_event()
    assert isinstance(event, Decide) and event.head == ocrq(4)[:17] + bytes(168 - 17)
    with pytest.raises(AssertionError):
        framer.next_event()  # the decision is owed first
    framer.decided(ocrq(9))
    assert framer.next_event() == Release(ocrq(9)[:20])
    assert framer.held == 0 and not framer.idle
    framer.feed(ocrq(4)[20:])
    assert framer.next_event() == Release(ocrq(4)[20:]) and framer.idle


def test_the_framer_refuses_a_translation_nobody_asked_for_or_of_another_length() -> None:
    framer = PptpFramer()
    with pytest.raises(AssertionError):
        framer.decided(ccrq(1))
    framer.feed(ccrq(1))
    assert isinstance(framer.next_event(), Decide)
    with pytest.raises(AssertionError):
        framer.decided(ccrq(1) + b"x")
