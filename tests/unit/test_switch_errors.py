"""The switch's error messages: the expected answers to the app's own requests are not
logged as errors (an operator reads those as faults), every other error is."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from ryu_apps import flowmods
from ryu_apps.framework import ofproto_v1_3 as ofp
from ryu_apps.framework import ofproto_v1_3_parser as parser
from ryu_apps.nat_gateway import NatGateway
from tests.unit.test_closed_loop import build_lab


def error(dp: object, err_type: int, code: int) -> SimpleNamespace:
    return SimpleNamespace(msg=parser.OFPErrorMsg(dp, type_=err_type, code=code, data=b""))


def test_meter_exists_is_expected_and_nothing_else_is() -> None:
    assert flowmods.expected_error(ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_METER_EXISTS)
    for err_type, code in ((ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_UNKNOWN_METER),
                           (ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_OUT_OF_METERS),
                           (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPMMFC_METER_EXISTS),
                           (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ)):
        assert not flowmods.expected_error(err_type, code), (err_type, code)


def test_a_restart_logs_no_error_for_the_meters_it_finds(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A restarted controller adds its meters, which the switch has: each ADD is answered
    with "meter exists" (the MODIFY after it sets the rate). Not an error; a real one,
    such as a MODIFY of an unknown meter or a flow-mod refused, still is."""
    lab = build_lab(monkeypatch, state_file=str(tmp_path / "state.sqlite"))
    app = NatGateway()
    app.now = lab.clock  # type: ignore[method-assign]
    lab.switch.connect(app)
    lab.settle()
    refused = list(lab.switch.errors)
    assert refused and all(e.startswith(f"meter-mod {ofp.OFPMC_ADD} of meter") for e in refused)
    caplog.set_level(logging.DEBUG, logger="pptp_alg.gateway")
    for _ in refused:
        app._error(error(lab.switch, ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_METER_EXISTS))
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len([r for r in caplog.records if "error type=12 code=1" in r.getMessage()]) == len(
        refused)
    app._error(error(lab.switch, ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_UNKNOWN_METER))
    app._error(error(lab.switch, ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_TABLE_FULL))
    assert [r.levelno for r in caplog.records if r.levelno >= logging.WARNING] == [
        logging.ERROR, logging.ERROR]
    lab.switch.errors.clear()
