"""The gateway's Prometheus metrics, built by ``prometheus_client`` from the live state.

A :class:`GatewayCollector` reads each gateway's core and app at every scrape (nothing is
kept twice); :func:`exposition` renders a registry holding it in the Prometheus text
format. Every sample of a gateway has the label ``gateway`` (its name: ``default`` for
the one gateway of ``[nat]`` alone); the process's own counters
(``pptp_alg_switches_refused_total``: switches no gateway binds) have none.
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
from collections.abc import Callable, Iterator, Mapping
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
    @property
    def counters(self) -> CounterSet: ...


class _Demux(_Counted, Protocol):
    @property
    def up(self) -> bool: ...


class GatewayApp(Protocol):
    """What the collector reads of a running gateway (``ryu_apps.unit.GatewayUnit``)."""

    @property
    def core(self) -> Gateway: ...

    @property
    def counters(self) -> CounterSet: ...

    @property
    def neighbours(self) -> _Counted: ...

    @property
    def demux(self) -> _Demux: ...

    @property
    def flow_entries(self) -> int: ...


class GatewayCollector(Collector):
    """Metrics of the running gateways, read at each scrape; every sample of a gateway
    has its name as label ``gateway``.

    Args:
        gateways: the gateways by name.
        process: the process's own counters (no ``gateway`` label), if any.
    """

    def __init__(self, gateways: Mapping[str, GatewayApp],
                 process: CounterSet | None = None) -> None:
        self._gateways = gateways
        self._process = process

    def collect(self) -> Iterator[Metric]:
        """Every metric family, from the state as it is now."""
        counters: dict[str, CounterMetricFamily] = {}
        gauges: dict[str, GaugeMetricFamily] = {}

        def counter(name: str, text: str, *labels: str) -> CounterMetricFamily:
            if name not in counters:
                counters[name] = CounterMetricFamily(f"{PREFIX}_{name}", text,
                                                     labels=["gateway", *labels])
            return counters[name]

        def gauge(name: str, text: str, *labels: str) -> GaugeMetricFamily:
            if name not in gauges:
                gauges[name] = GaugeMetricFamily(f"{PREFIX}_{name}", text,
                                                 labels=["gateway", *labels])
            return gauges[name]

        for gateway, app in self._gateways.items():
            self._collect(gateway, app, counter, gauge)
        yield from counters.values()
        yield from gauges.values()
        if self._process is not None:
            for name, value in self._process.as_dict().items():
                yield CounterMetricFamily(f"{PREFIX}_{name}", _help(name), value=value)

    @staticmethod
    def _collect(gateway: str, app: GatewayApp, counter: Callable[..., CounterMetricFamily],
                 gauge: Callable[..., GaugeMetricFamily]) -> None:
        core = app.core
        errors = counter("errors", "Packets and messages refused, dropped or lost, by kind",
                         "kind")
        counter_sets = (core.counters, app.counters, app.neighbours.counters,
                        app.demux.counters)
        for counters in counter_sets:
            for name, value in counters.as_dict().items():
                if name in ERROR_KINDS:
                    errors.add_metric([gateway, name], value)
                else:
                    counter(name, _help(name)).add_metric([gateway], value)
        gauge("calls_in_progress", "Calls whose data channel is open").add_metric(
            [gateway], core.calls_in_progress)
        sessions = gauge("nat_sessions", "NAT sessions by protocol", "proto")
        by_proto = Counter(Proto(s.proto).name.lower() for s in core.nat.sessions())
        for proto in (Proto.TCP, Proto.UDP, Proto.ICMP):
            name = proto.name.lower()
            sessions.add_metric([gateway, name], by_proto[name])
        hosts = gauge("public_address_hosts", "Inside hosts bound to each public address",
                      "public_ip")
        pool = core.nat.pool
        for address in pool.addresses:
            hosts.add_metric([gateway, str(address)], pool.hosts_on(address))
        gauge("flow_entries", "The gateway's flow entries on the switch at its last "
              "report").add_metric([gateway], app.flow_entries)
        gauge("gre_demux_up", "1 while the GRE demultiplexer answers its heartbeat"
              ).add_metric([gateway], int(app.demux.up))
        packets = counter("gre_packets", "The calls' GRE packets by path and direction",
                          "path", "direction")
        octets = counter("gre_bytes", "The calls' GRE frame bytes by path and direction",
                         "path", "direction")
        for (path, direction), (count, byte_count) in sorted(core.server_map.traffic().items()):
            packets.add_metric([gateway, path, direction], count)
            octets.add_metric([gateway, path, direction], byte_count)


def _help(name: str) -> str:
    return name.replace("_", " ").capitalize()


def registry(gateways: Mapping[str, GatewayApp], process: CounterSet | None = None
             ) -> CollectorRegistry:
    """A registry of its own holding the gateways' collector (not the process-wide
    one)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(gateways, process))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format (version 0.0.4)."""
    data: bytes = generate_latest(reg)
    return data
