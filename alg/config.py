"""Timeouts and limits of the ALG core, with the defaults of the architecture."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ipaddress import IPv4Address

from alg.errors import ConfigError

POLICIES = ("open", "strict")


@dataclass(frozen=True)
class AlgConfig:
    """Configuration of the core. Times are seconds, sizes bytes.

    Attributes:
        public_ips: the public address pool, spread over inside hosts (paired pooling).
        tcp_idle: idle timeout of a TCP session, the PPTP control connection included.
        udp_idle: idle timeout of a UDP session.
        icmp_idle: idle timeout of an ICMP echo session.
        gre_idle: idle timeout of a server-map (a call's data channel).
        call_id_hold_down: how long a released Call ID stays unusable.
        max_buffer: bytes held at most per direction of a control connection.
        port_min: lowest public port handed out when the inside port is taken.
        port_max: highest public port handed out.
        alg_enabled: False gives address-only NAT for TCP/1723 and GRE.
        policy: ``open`` lets inside hosts start anything; ``strict`` only TCP to port
            1723. Outside hosts never start anything.
        tcp_closing: how long a control connection lingers after FIN from both sides
            (an RST ends it at once).
    """

    public_ips: tuple[IPv4Address, ...] = (IPv4Address("203.0.113.2"),)
    tcp_idle: float = 1200.0
    udp_idle: float = 120.0
    icmp_idle: float = 20.0
    gre_idle: float = 300.0
    call_id_hold_down: float = 60.0
    max_buffer: int = 65536
    port_min: int = 1024
    port_max: int = 65535
    alg_enabled: bool = True
    policy: str = "open"
    tcp_closing: float = 10.0

    def __post_init__(self) -> None:
        if not self.public_ips:
            raise ConfigError("public_ips", "at least one public address is needed")
        if len(set(self.public_ips)) != len(self.public_ips):
            raise ConfigError("public_ips", "addresses must be distinct")
        for field in dataclasses.fields(self):
            if field.name.endswith("_idle") or field.name in ("call_id_hold_down", "tcp_closing"):
                value = getattr(self, field.name)
                if not value > 0:
                    raise ConfigError(field.name, f"must be positive seconds, got {value!r}")
        if self.policy not in POLICIES:
            raise ConfigError("policy", f"must be one of {POLICIES}, got {self.policy!r}")
        if self.max_buffer < 1024:
            raise ConfigError("max_buffer", f"must be at least 1024 bytes, got {self.max_buffer}")
        if not 1 <= self.port_min <= self.port_max <= 65535:
            raise ConfigError(
                "port_min",
                f"need 1 <= port_min <= port_max <= 65535, got {self.port_min}..{self.port_max}",
            )
