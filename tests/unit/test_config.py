"""AlgConfig: defaults of the architecture, and a refusal naming the key for bad values."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from alg.config import AlgConfig
from alg.errors import AlgError, ConfigError


def test_defaults_are_the_architecture_ones() -> None:
    config = AlgConfig()
    assert config.public_ips == (IPv4Address("203.0.113.2"),)
    assert (config.tcp_idle, config.udp_idle, config.icmp_idle) == (1200, 120, 20)
    assert config.gre_idle == 300
    assert config.call_id_hold_down == 60
    assert config.max_buffer == 64 * 1024
    assert config.policy == "open"
    assert config.alg_enabled
    assert (config.max_calls_per_connection, config.max_calls) == (128, 20_000)
    assert (config.max_calls_per_host, config.max_call_ids_per_host) == (128, 512)
    assert (config.max_connections_per_host, config.max_handshakes_per_host) == (32, 16)
    assert (config.max_sessions_per_host, config.max_sessions) == (4096, 200_000)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"public_ips": ()}, "public_ips"),
        ({"public_ips": (IPv4Address("203.0.113.2"),) * 2}, "public_ips"),
        ({"tcp_idle": 0}, "tcp_idle"),
        ({"udp_idle": -1}, "udp_idle"),
        ({"icmp_idle": 0}, "icmp_idle"),
        ({"gre_idle": 0}, "gre_idle"),
        ({"call_id_hold_down": 0}, "call_id_hold_down"),
        ({"tcp_closing": 0}, "tcp_closing"),
        ({"policy": "permissive"}, "policy"),
        ({"max_buffer": 10}, "max_buffer"),
        ({"port_min": 0}, "port_min"),
        ({"port_min": 2000, "port_max": 1000}, "port_min"),
        ({"port_max": 70000}, "port_min"),
        ({"tcp_handshake": 0}, "tcp_handshake"),
        ({"max_calls_per_connection": 0}, "max_calls_per_connection"),
        ({"max_calls": 0}, "max_calls"),
        ({"max_connections_per_host": 0}, "max_connections_per_host"),
        ({"max_handshakes_per_host": -1}, "max_handshakes_per_host"),
        ({"max_sessions_per_host": 0}, "max_sessions_per_host"),
        ({"max_sessions": 0}, "max_sessions"),
    ],
)
def test_bad_values_are_refused_naming_the_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        AlgConfig(**changes)  # type: ignore[arg-type]
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert isinstance(info.value, AlgError)
