"""Histograms with fixed buckets (``alg.histogram``) and the call setup times the core
records in them (``alg.pptp``), with the time passed in."""

from __future__ import annotations

import math

import pytest

from alg.histogram import Histogram
from alg.pptp import CALL_SETUP_BUCKETS
from tests.unit.pptp_flows import ControlLink, gateway, icrp, icrq, ocrp, ocrq


def test_observations_fall_in_the_first_bucket_whose_bound_holds_them() -> None:
    times = Histogram((0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 1.0, 20.0):
        times.observe(value)
    assert times.buckets() == [(0.1, 2), (1.0, 4), (10.0, 4), (math.inf, 5)]
    assert times.count == 5
    assert times.sum == pytest.approx(21.65)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf),
                                    (math.nan,)])
def test_bounds_must_be_finite_and_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match=r"bucket|at least one"):
        Histogram(bounds)


def test_call_setup_times_go_from_request_to_reply_by_direction() -> None:
    gw = gateway()
    link = ControlLink(gw, now=100.0).start()
    link.client_send(ocrq(5))
    b = link.call_id_to_server()
    link.now = 100.25
    link.server_send(ocrp(700, b))
    link.now = 101.0
    link.server_send(ocrp(700, b))
    link.now = 200.0
    link.server_send(icrq(800))
    link.now = 203.0
    link.client_send(icrp(6, 800))
    times = gw.call_setup_seconds
    assert (times["outgoing"].count, times["outgoing"].sum) == (1, 0.25)
    assert (times["incoming"].count, times["incoming"].sum) == (1, 3.0)
    assert dict(times["outgoing"].buckets())[0.25] == 1
    assert dict(times["outgoing"].buckets())[0.1] == 0
    assert times["outgoing"].bounds == CALL_SETUP_BUCKETS
    assert gw.counters.calls_set_up == 1


def test_a_refused_reply_has_a_setup_time_too() -> None:
    gw = gateway()
    link = ControlLink(gw, now=10.0).start()
    link.client_send(ocrq(5))
    b = link.call_id_to_server()
    link.now = 12.0
    link.server_send(ocrp(700, b, result=3))
    assert (gw.call_setup_seconds["outgoing"].count,
            gw.call_setup_seconds["outgoing"].sum) == (1, 2.0)
    assert gw.counters.calls_set_up == 0


def test_a_reply_whose_request_the_gateway_did_not_see_has_none() -> None:
    gw = gateway()
    link = ControlLink(gw, now=10.0).start()
    link.client_send(icrp(6, 800))
    assert gw.counters.unknown_call_ids == 1
    assert [t.count for t in gw.call_setup_seconds.values()] == [0, 0]
