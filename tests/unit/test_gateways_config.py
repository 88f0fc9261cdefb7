"""Several gateways in one configuration file: ``[gateway:NAME]`` sections over
``[nat]`` (``alg.config.load_gateways``, ``ryu_apps.config.read``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alg.config import DEFAULT_GATEWAY, load_gateways
from alg.errors import ConfigError
from ryu_apps import config as options
from tests.unit.app_env import OPTIONS

NAT = {k: v for k, v in OPTIONS.items() if k not in ("bridge", "inside_ports", "outside_port")}


def section(tag: str, **more: Any) -> dict[str, Any]:
    return {"bridge": f"br-{tag}", "inside_ports": [f"{tag}1"], "outside_port": f"{tag}out",
            **more}


def test_nat_alone_is_the_one_default_gateway() -> None:
    gateways = load_gateways(OPTIONS, {})
    assert list(gateways) == [DEFAULT_GATEWAY]
    assert gateways[DEFAULT_GATEWAY].bridge == "br-test"


def test_sections_take_natss_values_unless_they_set_their_own() -> None:
    gateways = load_gateways({**NAT, "max_calls": 77}, {
        "edge1": section("x"), "edge2": section("y", max_calls=5, ct_zone=9)})
    assert list(gateways) == ["edge1", "edge2"]
    assert gateways["edge1"].alg.max_calls == 77 and gateways["edge2"].alg.max_calls == 5
    assert gateways["edge1"].bridge == "br-x" and gateways["edge2"].inside_ports == ("y1",)
    assert gateways["edge1"].alg.public_ips == gateways["edge2"].alg.public_ips


@pytest.mark.parametrize(("edge2", "key"), [
    (section("y", bridge="br-x"), "gateway:edge2.bridge"),
    (section("y", inside_ports=["x1"]), "gateway:edge2.inside_ports"),
    (section("y", outside_port="x1"), "gateway:edge2.outside_port"),
    (section("y"), "gateway:edge2.ct_zone"),
    (section("y", ct_zone=4, state_file="/s"), "gateway:edge2.state_file"),
    (section("y", ct_zone=4, rest_port=9000), "gateway:edge2.rest_port"),
    (section("y", ct_zone=4, bridge=""), "gateway:edge2.bridge"),
    (section("y", ct_zone=4, public_ips="nonsense"), "gateway:edge2.public_ips"),
])
def test_what_two_gateways_would_share_is_refused_naming_the_section_and_key(
        edge2: dict[str, Any], key: str) -> None:
    nat = {**NAT, "ordinary_nat": "conntrack"}
    with pytest.raises(ConfigError) as caught:
        load_gateways(nat, {"edge1": section("x", state_file="/s"), "edge2": edge2})
    assert caught.value.key == key, caught.value


def test_the_same_datapath_id_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"gateway:b\.datapath_id: 00000000000000aa is "
                                          "gateway a's datapath too"):
        load_gateways(NAT, {"a": section("x", bridge="", datapath_id="0xaa"),
                            "b": section("y", bridge="", datapath_id="aa")})


@pytest.mark.parametrize("name", ["", "Edge", "-x", "x" * 33, "a b"])
def test_a_bad_gateway_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="a gateway's name"):
        load_gateways(NAT, {name: section("x")})


def test_the_file_is_read_with_oslo_config(tmp_path: Path) -> None:
    from oslo_config import cfg

    path = tmp_path / "gateway.conf"
    path.write_text("\n".join([
        "[nat]", "rest_port = 0", "inside_subnet = 192.168.1.0/24",
        "inside_gateway = 192.168.1.254", "outside_subnet = 203.0.113.0/24",
        "public_ips = 203.0.113.2", "gateway_mac = 02:00:5e:00:01:fe", "max_calls = 40",
        "[gateway:g1]", "bridge = br-one", "inside_ports = one-c1,one-c2",
        "outside_port = one-srv", "ct_zone = 11",
        "[gateway:g2]", "bridge = br-two", "inside_ports = two-c1", "outside_port = two-srv",
        "ct_zone = 12", "max_calls = 3", ""]))
    conf = cfg.ConfigOpts()
    options.register(conf)
    conf(args=[], default_config_files=[str(path)])
    nat, sections = options.read(conf)
    assert sorted(sections) == ["g1", "g2"]
    assert sections["g1"]["max_calls"] is None and sections["g2"]["max_calls"] == 3
    gateways = load_gateways(nat, sections)
    assert gateways["g1"].alg.max_calls == 40 and gateways["g2"].alg.max_calls == 3
    assert gateways["g2"].inside_ports == ("two-c1",) and gateways["g1"].alg.ct_zone == 11
