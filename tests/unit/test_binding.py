"""Which gateway a connecting switch belongs to (``ryu_apps.binding``)."""

from __future__ import annotations

import pytest

from alg.config import load
from alg.errors import ConfigError
from ryu_apps.binding import OFPP_LOCAL, Binder, Claim, bridge_name
from tests.unit.app_env import OPTIONS


def test_the_bridge_is_the_local_ports_name() -> None:
    assert bridge_name({"in1": 1, "br-edge": OFPP_LOCAL, "out": 100}) == "br-edge"
    assert bridge_name({"in1": 1, "out": 100}) is None


def test_a_gateway_binds_its_bridge_only() -> None:
    binder = Binder([Claim("edge", bridge="br-edge")])
    assert binder.bind(7, "br-other") is None
    assert binder.bind(7, None) is None
    assert binder.bind(8, "br-edge") == Claim("edge", bridge="br-edge")
    assert binder.bind(9, "br-edge") == Claim("edge", bridge="br-edge")  # recreated bridge


def test_a_gateway_binds_its_datapath_id_and_with_a_bridge_both_must_match() -> None:
    by_id = Binder([Claim("edge", datapath_id=0x5001)])
    assert by_id.bind(0x5002, "br-edge") is None
    assert by_id.bind(0x5001, "anything") == Claim("edge", datapath_id=0x5001)
    both = Binder([Claim("edge", datapath_id=0x5001, bridge="br-edge")])
    assert both.bind(0x5001, "br-other") is None
    assert both.bind(0x5002, "br-edge") is None
    assert both.bind(0x5001, "br-edge") is not None


def test_a_gateway_naming_no_switch_keeps_the_first_one_that_connected() -> None:
    """The hazard of old: any switch that connected became the gateway's datapath."""
    binder = Binder([Claim("only")])
    assert binder.bind(0x10, "br-a") == Claim("only")
    assert binder.bind(0x20, "br-b") is None
    assert binder.bind(0x10, "br-a") == Claim("only")  # the same switch, reconnected


def test_each_switch_goes_to_the_gateway_that_names_it() -> None:
    binder = Binder([Claim("g1", bridge="br-1"), Claim("g2", datapath_id=0x22)])
    assert binder.bind(0x11, "br-1").name == "g1"  # type: ignore[union-attr]
    assert binder.bind(0x22, "br-2").name == "g2"  # type: ignore[union-attr]
    assert binder.bind(0x33, "br-3") is None


def test_the_claim_says_what_it_asks_for() -> None:
    assert Claim("g", 0x5001, "br-x").describe() == "datapath 0000000000005001 and bridge br-x"
    assert Claim("g").describe() == "the first switch that connects"


@pytest.mark.parametrize("value", ["0x", "xyz", "0x" + "1" * 17, "-1", "12 34"])
def test_a_bad_datapath_id_is_refused_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match="datapath_id"):
        load({**OPTIONS, "datapath_id": value})


@pytest.mark.parametrize(("value", "expected"), [
    ("", None), ("0x500001bc7bd0f468", 0x500001BC7BD0F468), ("500001BC7BD0F468",
                                                              0x500001BC7BD0F468), ("1", 1)])
def test_a_datapath_id_is_hex_as_ovs_vsctl_shows_it(value: str, expected: int | None) -> None:
    assert load({**OPTIONS, "datapath_id": value}).datapath_id == expected
