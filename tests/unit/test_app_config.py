"""The app's [nat] options: a good file loads, every bad value is refused by name."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from alg.config import load
from alg.errors import ConfigError

GOOD: dict[str, Any] = {
    "inside_ports": ["lab-c1", "lab-c2"],
    "outside_port": "lab-srv",
    "inside_subnet": "192.168.1.0/24",
    "inside_gateway": "192.168.1.254",
    "outside_subnet": "203.0.113.0/24",
    "public_ips": ["203.0.113.2", "203.0.113.3"],
    "next_hop": "",
    "policy": "strict",
    "alg": False,
    "gateway_mac": "02:00:5E:00:01:FE",
    "gre_idle": 30.0,
}


def test_good_values_load() -> None:
    config = load(GOOD)
    assert config.inside_ports == ("lab-c1", "lab-c2")
    assert config.inside_subnet == IPv4Network("192.168.1.0/24")
    assert config.alg.public_ips == (IPv4Address("203.0.113.2"), IPv4Address("203.0.113.3"))
    assert config.alg.policy == "strict"
    assert not config.alg.alg_enabled
    assert config.alg.gre_idle == 30.0
    assert config.next_hop is None
    assert config.gateway_mac == "02:00:5e:00:01:fe"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"inside_ports": []}, "nat.inside_ports"),
        ({"outside_port": ""}, "nat.outside_port"),
        ({"outside_port": "lab-c1"}, "nat.outside_port"),
        ({"inside_subnet": ""}, "nat.inside_subnet"),
        ({"inside_subnet": "192.168.1.0/33"}, "nat.inside_subnet"),
        ({"inside_gateway": ""}, "nat.inside_gateway"),
        ({"inside_gateway": "192.168.2.1"}, "nat.inside_gateway"),
        ({"inside_gateway": "banana"}, "nat.inside_gateway"),
        ({"outside_subnet": "192.168.0.0/16"}, "nat.outside_subnet"),
        ({"public_ips": []}, "nat.public_ips"),
        ({"public_ips": ["203.0.113.300"]}, "nat.public_ips"),
        ({"public_ips": ["192.168.1.9"]}, "nat.public_ips"),
        ({"public_ips": ["203.0.113.2", "203.0.113.2"]}, "nat.public_ips"),
        ({"next_hop": "198.51.100.1"}, "nat.next_hop"),
        ({"policy": "lenient"}, "nat.policy"),
        ({"gateway_mac": "02:00:5e:00:01"}, "nat.gateway_mac"),
        ({"gateway_mac": "zz:00:5e:00:01:fe"}, "nat.gateway_mac"),
        ({"stats_interval": -1}, "nat.stats_interval"),
        ({"stats_interval": 0}, "nat.stats_interval"),
        ({"tcp_closing": 0}, "nat.tcp_closing"),
        ({"port_min": 3000, "port_max": 2000}, "nat.port_min"),
        ({"tcp_idle": 0}, "nat.tcp_idle"),
        ({"max_buffer": 1}, "nat.max_buffer"),
        ({"alg": "maybe"}, "nat.alg"),
        ({"tcp_idle": "soon"}, "nat.tcp_idle"),
        ({"call_id_hold_down": 0}, "nat.call_id_hold_down"),
    ],
)
def test_bad_values_are_refused_naming_the_option(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load({**GOOD, **changes})
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_next_hop_on_the_outside_subnet_is_accepted() -> None:
    assert load({**GOOD, "next_hop": "203.0.113.254"}).next_hop == IPv4Address("203.0.113.254")


@pytest.mark.parametrize(("text", "value"), [("false", False), ("No", False), ("true", True),
                                             ("1", True)])
def test_options_as_text_load_as_a_file_gives_them(text: str, value: bool) -> None:
    config = load({**GOOD, "alg": text, "inside_ports": "lab-c1, lab-c2", "gre_idle": "30"})
    assert config.alg.alg_enabled is value
    assert config.inside_ports == ("lab-c1", "lab-c2") and config.alg.gre_idle == 30.0
