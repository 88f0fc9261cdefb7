"""The switch ports, addresses and ``[nat]`` options the app's unit tests share."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

GW_MAC = "02:00:5e:00:01:fe"
IN1, IN2, OUT = 1, 2, 100
CLIENT = IPv4Address("192.168.1.1")
CLIENT_MAC = "0a:00:00:00:00:01"
OTHER_MAC = "0a:00:00:00:00:02"
SERVER = IPv4Address("203.0.113.1")
SERVER_MAC = "0a:00:00:00:00:64"
PUBLIC = IPv4Address("203.0.113.2")
OPTIONS: dict[str, Any] = {
    "bridge": "br-test",
    "inside_ports": ["in1", "in2"],
    "outside_port": "out",
    "inside_subnet": "192.168.1.0/24",
    "inside_gateway": "192.168.1.254",
    "outside_subnet": "203.0.113.0/24",
    "public_ips": [str(PUBLIC)],
    "next_hop": "203.0.113.254",
    "policy": "open",
    "alg": True,
    "gateway_mac": GW_MAC,
    "stats_interval": 5.0,
    "rest_port": 0,
    "ordinary_nat": "controller",
}
"""Inside ports ``in1`` and ``in2`` (OpenFlow ports 1 and 2), outside port ``out`` (100).
Ordinary NAT by the controller: the fake switch has no connection tracker, so the
datapath's NAT (the default) is tested end to end on real OVS (``tests/e2e``)."""
PORTS = (("in1", IN1), ("in2", IN2), ("out", OUT), ("br-test", 0xFFFFFFFE))
"""The switch's port description: the options' ports and the LOCAL port, named after
the bridge the options bind to."""
