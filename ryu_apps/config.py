"""The gateway's configuration: oslo.config options in group ``[nat]``, validated.

``load`` turns raw option values into a :class:`GatewayConfig`; every bad or missing
value raises :class:`~alg.errors.ConfigError` naming the option (``nat.<name>``), so the
app can refuse to start with a message that says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from alg.config import POLICIES, AlgConfig
from alg.errors import ConfigError

GROUP = "nat"


def register(conf: Any) -> None:
    """Register the ``[nat]`` options on an oslo.config ``ConfigOpts`` (Ryu's CONF)."""
    from ryu import cfg

    defaults = AlgConfig()
    conf.register_opts(
        [
            cfg.StrOpt("bridge", default="", help="name of the OVS bridge (informational)"),
            cfg.ListOpt("inside_ports", default=[], help="OVS port names on the inside"),
            cfg.StrOpt("outside_port", default="", help="OVS port name on the outside"),
            cfg.StrOpt("inside_subnet", default="", help="inside subnet, e.g. 192.168.1.0/24"),
            cfg.StrOpt("inside_gateway", default="", help="the gateway's inside address"),
            cfg.StrOpt("outside_subnet", default="", help="on-link outside subnet"),
            cfg.ListOpt("public_ips", default=[], help="the public address pool"),
            cfg.StrOpt("next_hop", default="", help="router for destinations off the "
                       "outside subnet (empty: only the outside subnet is reachable)"),
            cfg.StrOpt("policy", default="open", help="open | strict"),
            cfg.BoolOpt("alg", default=True, help="PPTP ALG on (false: address-only NAT)"),
            cfg.StrOpt("gateway_mac", default="02:00:5e:00:01:fe",
                       help="MAC address the gateway answers ARP with"),
            cfg.FloatOpt("tcp_idle", default=defaults.tcp_idle),
            cfg.FloatOpt("udp_idle", default=defaults.udp_idle),
            cfg.FloatOpt("icmp_idle", default=defaults.icmp_idle),
            cfg.FloatOpt("gre_idle", default=defaults.gre_idle,
                         help="server-map idle timeout (seconds)"),
            cfg.FloatOpt("call_id_hold_down", default=defaults.call_id_hold_down),
            cfg.IntOpt("max_buffer", default=defaults.max_buffer,
                       help="bytes held at most per direction of a control connection"),
            cfg.FloatOpt("tcp_closing", default=defaults.tcp_closing,
                         help="seconds a control connection lingers after both FINs"),
            cfg.IntOpt("port_min", default=defaults.port_min,
                       help="lowest public port handed out when the inside port is taken"),
            cfg.IntOpt("port_max", default=defaults.port_max,
                       help="highest public port handed out"),
            cfg.FloatOpt("stats_interval", default=5.0,
                         help="seconds between flow statistics polls"),
        ],
        group=GROUP,
    )


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the app needs: the core's config plus the switch and L2 facts."""

    alg: AlgConfig
    bridge: str
    inside_ports: tuple[str, ...]
    outside_port: str
    inside_subnet: IPv4Network
    inside_gateway: IPv4Address
    outside_subnet: IPv4Network
    next_hop: IPv4Address | None
    gateway_mac: str
    stats_interval: float


def _address(key: str, value: object) -> IPv4Address:
    try:
        return IPv4Address(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{GROUP}.{key}", f"not an IPv4 address: {value!r}") from exc


def _network(key: str, value: object) -> IPv4Network:
    if not value:
        raise ConfigError(f"{GROUP}.{key}", "missing (an IPv4 subnet such as 192.168.1.0/24)")
    try:
        return IPv4Network(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{GROUP}.{key}", f"not an IPv4 subnet: {value!r}") from exc


def load(values: Mapping[str, Any]) -> GatewayConfig:
    """Validate raw option values (by option name) into a :class:`GatewayConfig`.

    Raises:
        ConfigError: naming ``nat.<option>`` for the first bad or missing value.
    """
    inside_ports = tuple(p.strip() for p in values.get("inside_ports") or [] if p.strip())
    if not inside_ports:
        raise ConfigError(f"{GROUP}.inside_ports", "missing (at least one OVS port name)")
    outside_port = str(values.get("outside_port") or "").strip()
    if not outside_port:
        raise ConfigError(f"{GROUP}.outside_port", "missing (the OVS port name on the outside)")
    if outside_port in inside_ports:
        raise ConfigError(f"{GROUP}.outside_port", f"{outside_port} is also an inside port")
    inside_subnet = _network("inside_subnet", values.get("inside_subnet"))
    if not values.get("inside_gateway"):
        raise ConfigError(f"{GROUP}.inside_gateway", "missing (the gateway's inside address)")
    inside_gateway = _address("inside_gateway", values["inside_gateway"])
    if inside_gateway not in inside_subnet:
        raise ConfigError(f"{GROUP}.inside_gateway", f"{inside_gateway} is not in {inside_subnet}")
    outside_subnet = _network("outside_subnet", values.get("outside_subnet"))
    if inside_subnet.overlaps(outside_subnet):
        raise ConfigError(f"{GROUP}.outside_subnet", "overlaps the inside subnet")
    raw_public = [p for p in values.get("public_ips") or [] if str(p).strip()]
    if not raw_public:
        raise ConfigError(f"{GROUP}.public_ips", "missing (at least one public address)")
    public_ips = tuple(_address("public_ips", p) for p in raw_public)
    for ip in public_ips:
        if ip in inside_subnet:
            raise ConfigError(f"{GROUP}.public_ips", f"{ip} is inside the inside subnet")
    next_hop = None
    if values.get("next_hop"):
        next_hop = _address("next_hop", values["next_hop"])
        if next_hop not in outside_subnet:
            raise ConfigError(f"{GROUP}.next_hop", f"{next_hop} is not in {outside_subnet}")
    policy = str(values.get("policy") or "open")
    if policy not in POLICIES:
        raise ConfigError(f"{GROUP}.policy", f"must be one of {', '.join(POLICIES)}: {policy!r}")
    mac = str(values.get("gateway_mac") or "")
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and _is_hex(p) for p in parts):
        raise ConfigError(f"{GROUP}.gateway_mac", f"not a MAC address: {mac!r}")
    stats_interval = float(values.get("stats_interval", 5.0))
    if stats_interval <= 0:
        raise ConfigError(f"{GROUP}.stats_interval", "must be positive")
    defaults = AlgConfig()
    try:
        alg = AlgConfig(
            public_ips=public_ips,
            tcp_idle=float(values.get("tcp_idle", defaults.tcp_idle)),
            udp_idle=float(values.get("udp_idle", defaults.udp_idle)),
            icmp_idle=float(values.get("icmp_idle", defaults.icmp_idle)),
            gre_idle=float(values.get("gre_idle", defaults.gre_idle)),
            call_id_hold_down=float(values.get("call_id_hold_down", defaults.call_id_hold_down)),
            max_buffer=int(values.get("max_buffer", defaults.max_buffer)),
            tcp_closing=float(values.get("tcp_closing", defaults.tcp_closing)),
            port_min=int(values.get("port_min", defaults.port_min)),
            port_max=int(values.get("port_max", defaults.port_max)),
            alg_enabled=bool(values.get("alg", True)),
            policy=policy,
        )
    except ConfigError as exc:
        raise ConfigError(f"{GROUP}.{exc.key}", str(exc).split(": ", 1)[1]) from exc
    return GatewayConfig(
        alg=alg,
        bridge=str(values.get("bridge") or ""),
        inside_ports=inside_ports,
        outside_port=outside_port,
        inside_subnet=inside_subnet,
        inside_gateway=inside_gateway,
        outside_subnet=outside_subnet,
        next_hop=next_hop,
        gateway_mac=mac.lower(),
        stats_interval=stats_interval,
    )


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
