"""The gateway's Prometheus metrics, built by ``prometheus_client`` from the live state.

A :class:`GatewayCollector` reads each gateway's core and app at every scrape (nothing is
kept twice); :func:`exposition` renders a registry holding it in the Prometheus text
format. Every sample of a gateway has the label ``gateway`` (its name: ``default`` for
the one gateway of ``[nat]`` alone); the process's own metrics have none: its counters
(``pptp_alg_switches_refused_total``: switches no gateway binds),
``pptp_alg_build_info{version,framework,framework_version}`` (always 1), and
``prometheus_client``'s collectors of the process (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ``process_open_fds``, ``process_max_fds``,
``process_start_time_seconds``... read from ``/proc``), of Python's garbage collector
(``python_gc_*``) and ``python_info``.

Every counter of the core and of the app is exported, with its help text (what it
counts: :meth:`alg.counters.CounterSet.help`): those that count something refused,
dropped or lost as ``pptp_alg_errors_total{kind=...}`` (:data:`ERROR_KINDS`), the others
under their own names with ``_total``. Gauges:

* ``pptp_alg_calls_in_progress``: calls whose data channel is open;
* ``pptp_alg_nat_sessions{proto}``: NAT sessions by protocol (PPTP control connections
  are TCP sessions);
* ``pptp_alg_public_address_hosts{public_ip}``: inside hosts bound to each public address;
* ``pptp_alg_flow_entries``: the gateway's entries on the switch at its last report;
* ``pptp_alg_switch_connected``: 1 while the gateway's switch is connected;
* ``pptp_alg_switch_ready``: 1 while its packet-ins are handled (its entries restored or
  reconciled, the pipeline installed);
* ``pptp_alg_gre_demux_configured``: 1 when the gateway has a GRE demultiplexer
  (``gre_demux_port``);
* ``pptp_alg_gre_demux_up``: 1 while the GRE demultiplexer answers its heartbeat;
* ``pptp_alg_role{role}``: 1 for this controller's role for the gateway's switch
  (:data:`ROLES`; ``single`` without an election);
* ``pptp_alg_lease_age_seconds``: seconds since the etcd lease was last kept alive,
  while this controller holds the gateway's election key.

Counters by label: ``pptp_alg_gre_packets_total`` and ``pptp_alg_gre_bytes_total`` with
``path`` (:class:`alg.servermap.GrePath`: flow, demux, controller) and ``direction``
(outbound, inbound) from :meth:`alg.servermap.ServerMap.traffic` (the flow path's as of
the switch's last report, every ``stats_interval``).

Histograms (seconds): ``pptp_alg_call_setup_seconds{direction}``, from a call's request
to its reply as the gateway sees them (``outgoing``: Outgoing-Call-Request to
Outgoing-Call-Reply; ``incoming``: Incoming-Call-Request to Incoming-Call-Reply;
:attr:`alg.pptp.CallControl.setup_seconds`), and
``pptp_alg_packet_in_handling_seconds``, the app's time per packet-in
(``ryu_apps.unit.GatewayUnit.packet_in``), and ``pptp_alg_store_write_seconds``, the
time of each write of an event's records to the store (``ryu_apps.effects``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from alg.counters import CounterSet
from alg.histogram import Histogram
from alg.nat import Proto
from ryu_apps.command import DISTRIBUTION, version

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
    "demux_unexpected_frames", "calls_refused_cut_off", "election_request_failures",
})
"""Counters that count something refused, dropped or lost."""
ROLES = ("master", "master cut off", "elected", "candidate", "standby", "single")
"""The values of ``pptp_alg_role``'s ``role`` label."""


class _Counted(Protocol):
    @property
    def counters(self) -> CounterSet: ...


class _Demux(_Counted, Protocol):
    @property
    def up(self) -> bool: ...

    @property
    def enabled(self) -> bool: ...


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

    @property
    def datapath(self) -> Any: ...

    @property
    def ready(self) -> bool: ...

    @property
    def packet_in_seconds(self) -> Histogram: ...

    @property
    def store_write_seconds(self) -> Histogram: ...

    @property
    def role(self) -> str: ...

    def lease_age(self) -> float | None: ...


@dataclass(frozen=True)
class BuildInfo:
    """What ``pptp_alg_build_info`` says: this project's version and the framework's."""

    version: str
    framework: str
    framework_version: str


def build_info(framework: str) -> BuildInfo:
    """The build information of this process, which runs on ``framework`` (``ryu`` or
    ``os-ken``, also the name of its distribution)."""
    return BuildInfo(version(DISTRIBUTION), framework, version(framework))


class GatewayCollector(Collector):
    """Metrics of the running gateways, read at each scrape; every sample of a gateway
    has its name as label ``gateway``.

    Args:
        gateways: the gateways by name.
        process: the process's own counters (no ``gateway`` label), if any.
        build: what ``pptp_alg_build_info`` says, None for no such metric.
    """

    def __init__(self, gateways: Mapping[str, GatewayApp],
                 process: CounterSet | None = None, build: BuildInfo | None = None) -> None:
        self._gateways = gateways
        self._process = process
        self._build = build

    def collect(self) -> Iterator[Metric]:
        """Every metric family, from the state as it is now."""
        counters: dict[str, CounterMetricFamily] = {}
        gauges: dict[str, GaugeMetricFamily] = {}
        histograms: dict[str, HistogramMetricFamily] = {}

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

        def histogram(name: str, text: str, *labels: str) -> HistogramMetricFamily:
            if name not in histograms:
                histograms[name] = HistogramMetricFamily(f"{PREFIX}_{name}", text,
                                                         labels=["gateway", *labels])
            return histograms[name]

        for gateway, app in self._gateways.items():
            self._collect(gateway, app, counter, gauge)
            self._histograms(gateway, app, histogram)
        yield from counters.values()
        yield from gauges.values()
        yield from histograms.values()
        if self._process is not None:
            texts = self._process.help()
            for name, value in self._process.as_dict().items():
                yield CounterMetricFamily(f"{PREFIX}_{name}", texts[name], value=value)
        if self._build is not None:
            info = GaugeMetricFamily(
                f"{PREFIX}_build_info", "Always 1: this gateway's version, and the OpenFlow "
                "framework it runs on (ryu or os-ken) and its version",
                labels=["version", "framework", "framework_version"])
            info.add_metric([self._build.version, self._build.framework,
                             self._build.framework_version], 1)
            yield info

    @staticmethod
    def _collect(gateway: str, app: GatewayApp, counter: Callable[..., CounterMetricFamily],
                 gauge: Callable[..., GaugeMetricFamily]) -> None:
        core = app.core
        errors = counter("errors", "Packets, messages and records refused, dropped or lost, "
                         "and failures, by kind (the gateway counter that counts them)", "kind")
        counter_sets = (core.counters, app.counters, app.neighbours.counters,
                        app.demux.counters)
        for counters in counter_sets:
            texts = counters.help()
            for name, value in counters.as_dict().items():
                if name in ERROR_KINDS:
                    errors.add_metric([gateway, name], value)
                else:
                    counter(name, texts[name]).add_metric([gateway], value)
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
        gauge("switch_connected", "1 while the gateway's switch is connected").add_metric(
            [gateway], int(app.datapath is not None))
        gauge("switch_ready", "1 while the gateway handles its switch's packet-ins (its "
              "entries restored or reconciled, the pipeline installed)").add_metric(
            [gateway], int(app.ready))
        gauge("gre_demux_configured", "1 when the gateway has a GRE demultiplexer "
              "(gre_demux_port)").add_metric([gateway], int(app.demux.enabled))
        gauge("gre_demux_up", "1 while the GRE demultiplexer answers its heartbeat"
              ).add_metric([gateway], int(app.demux.up))
        roles = gauge("role", "1 for this controller's role for the gateway's switch: "
                      "master, master cut off (from etcd), elected, candidate, standby; "
                      "single without an election (store = sqlite)", "role")
        for role in ROLES:
            roles.add_metric([gateway, role], int(app.role == role))
        age = app.lease_age()
        if age is not None:
            gauge("lease_age_seconds", "Seconds since this controller last kept its etcd "
                  "lease for the gateway alive (only while it holds the election key)"
                  ).add_metric([gateway], age)
        packets = counter("gre_packets", "The calls' GRE packets by path and direction",
                          "path", "direction")
        octets = counter("gre_bytes", "The calls' GRE frame bytes by path and direction",
                         "path", "direction")
        for (path, direction), (count, byte_count) in sorted(core.server_map.traffic().items()):
            packets.add_metric([gateway, path, direction], count)
            octets.add_metric([gateway, path, direction], byte_count)


    @staticmethod
    def _histograms(gateway: str, app: GatewayApp,
                    histogram: Callable[..., HistogramMetricFamily]) -> None:
        setup = histogram("call_setup_seconds", "Seconds from a PPTP call's request to its "
                          "reply as the gateway sees them, by direction: outgoing "
                          "(Outgoing-Call-Request to Outgoing-Call-Reply), incoming "
                          "(Incoming-Call-Request to Incoming-Call-Reply)", "direction")
        for direction, times in app.core.call_setup_seconds.items():
            setup.add_metric([gateway, direction], _buckets(times), times.sum)
        handling = histogram("packet_in_handling_seconds", "Seconds the app took to handle "
                             "each packet-in of the gateway's switch")
        times = app.packet_in_seconds
        handling.add_metric([gateway], _buckets(times), times.sum)
        writes = histogram("store_write_seconds", "Seconds each write of an event's "
                           "records to the store took (SQLite or etcd)")
        times = app.store_write_seconds
        writes.add_metric([gateway], _buckets(times), times.sum)


def _buckets(times: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if math.isinf(bound) else repr(bound), count)
            for bound, count in times.buckets()]


def registry(gateways: Mapping[str, GatewayApp], process: CounterSet | None = None,
             build: BuildInfo | None = None) -> CollectorRegistry:
    """A registry of its own (not the process-wide one) holding the gateways' collector
    and ``prometheus_client``'s collectors of the process, of Python's garbage collector
    and of the platform."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(gateways, process, build))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format (version 0.0.4)."""
    data: bytes = generate_latest(reg)
    return data
