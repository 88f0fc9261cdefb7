"""The gateway's Prometheus metrics, built by ``prometheus_client`` from the live state.

A :class:`GatewayCollector` reads the core and the app at every scrape (nothing is kept
twice); :func:`exposition` renders a registry holding it in the Prometheus text format.
Every counter of the core and of the app is exported: those that count something refused,
dropped or lost as ``pptp_alg_errors_total{kind=...}`` (:data:`ERROR_KINDS`), the others
under their own names with ``_total``. Gauges:

* ``pptp_alg_calls_in_progress``: calls whose data channel is open;
* ``pptp_alg_nat_sessions{proto}``: NAT sessions by protocol (PPTP control connections
  are TCP sessions);
* ``pptp_alg_public_address_hosts{public_ip}``: inside hosts bound to each public address;
* ``pptp_alg_flow_entries``: the gateway's entries on the switch at its last report;
* ``pptp_alg_gre_demux_up``: 1 while the GRE demultiplexer answers its heartbeat.

Counters by label: ``pptp_alg_gre_packets_total`` and ``pptp_alg_gre_bytes_total`` with
``path`` (:class:`alg.servermap.GrePath`: flow, demux, controller) and ``direction``
(outbound, inbound) from :meth:`alg.servermap.ServerMap.traffic` (the flow path's as of
the switch's last report, every ``stats_interval``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alg.counters import CounterSet
from alg.nat import Proto

if TYPE_CHECKING:
    from alg.engine import Gateway

PREFIX = "pptp_alg"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ERROR_KINDS = frozenset({
    "allocation_failures", "malformed_messages", "truncated_messages",
    "unexpected_messages", "unknown_call_ids", "buffer_limit_drops", "gre_unknown_dropped",
    "gre_malformed", "policy_denied", "no_session_drops", "out_of_window_drops",
    "refused_calls", "refused_connections", "refused_sessions", "restore_skipped",
    "restore_records_rejected", "restore_failures", "icmp_martians", "icmp_sources_refused",
    "icmp_errors_unmatched", "icmp_malformed", "icmp_unsupported", "icmp_rate_limited",
    "undecodable_frames", "entries_not_installed", "fragments_dropped", "bad_checksums",
    "packet_ins_before_ready", "store_errors", "ttl_expired_dropped", "arp_queue_drops",
    "spoofed_drops", "neighbours_refused", "pins_refused", "arp_unsolicited_ignored",
    "demux_errors",
    "demux_unexpected_frames",
})
"""Counters that count something refused, dropped or lost."""


class _Counted(Protocol):
    counters: CounterSet


class _Demux(_Counted, Protocol):
    @property
    def up(self) -> bool: ...


class GatewayApp(Protocol):
    """What the collector reads of the running app (``ryu_apps.nat_gateway.NatGateway``)."""

    core: Gateway
    counters: CounterSet
    neighbours: _Counted
    demux: _Demux
    flow_entries: int


class GatewayCollector(Collector):
    """Metrics of one running gateway app, read at each scrape.

    Args:
        app: the app.
    """

    def __init__(self, app: GatewayApp) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        """Every metric family, from the state as it is now."""
        app = self._app
        core = app.core
        errors = CounterMetricFamily(f"{PREFIX}_errors", "Packets and messages refused, "
                                     "dropped or lost, by kind", labels=["kind"])
        counter_sets = (core.counters, app.counters, app.neighbours.counters,
                        app.demux.counters)
        for counters in counter_sets:
            for name, value in counters.as_dict().items():
                if name in ERROR_KINDS:
                    errors.add_metric([name], value)
                else:
                    yield CounterMetricFamily(f"{PREFIX}_{name}", _help(name), value=value)
        yield errors
        yield GaugeMetricFamily(f"{PREFIX}_calls_in_progress",
                                "Calls whose data channel is open", value=core.calls_in_progress)
        sessions = GaugeMetricFamily(f"{PREFIX}_nat_sessions", "NAT sessions by protocol",
                                     labels=["proto"])
        by_proto = Counter(Proto(s.proto).name.lower() for s in core.nat.sessions())
        for proto in (Proto.TCP, Proto.UDP, Proto.ICMP):
            name = proto.name.lower()
            sessions.add_metric([name], by_proto[name])
        yield sessions
        hosts = GaugeMetricFamily(f"{PREFIX}_public_address_hosts",
                                  "Inside hosts bound to each public address",
                                  labels=["public_ip"])
        pool = core.nat.pool
        for address in pool.addresses:
            hosts.add_metric([str(address)], pool.hosts_on(address))
        yield hosts
        yield GaugeMetricFamily(f"{PREFIX}_flow_entries", "The gateway's flow entries on "
                                "the switch at its last report", value=app.flow_entries)
        yield GaugeMetricFamily(f"{PREFIX}_gre_demux_up", "1 while the GRE demultiplexer "
                                "answers its heartbeat", value=int(app.demux.up))
        packets = CounterMetricFamily(f"{PREFIX}_gre_packets", "The calls' GRE packets by "
                                      "path and direction", labels=["path", "direction"])
        octets = CounterMetricFamily(f"{PREFIX}_gre_bytes", "The calls' GRE frame bytes by "
                                     "path and direction", labels=["path", "direction"])
        for (path, direction), (count, byte_count) in sorted(core.server_map.traffic().items()):
            packets.add_metric([path, direction], count)
            octets.add_metric([path, direction], byte_count)
        yield packets
        yield octets


def _help(name: str) -> str:
    return name.replace("_", " ").capitalize()


def registry(app: GatewayApp) -> CollectorRegistry:
    """A registry of its own holding the app's collector (not the process-wide one)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(app))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format (version 0.0.4)."""
    data: bytes = generate_latest(reg)
    return data
