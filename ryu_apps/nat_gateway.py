"""The NAT gateway with the PPTP ALG: a thin Ryu shim around the sans-IO core.

Run::

    pptp-alg-gateway --ofp-listen-host 127.0.0.1 --ofp-tcp-listen-port 6653 \\
        --config-file gateway.conf

The HTTP API (REST views and Prometheus ``/metrics``, ``ryu_apps.rest``) listens on
``[nat] rest_host`` and ``rest_port`` (127.0.0.1:8723 by default), served by the app
itself (``ryu_apps.http``), not by the framework's WSGI module.

**Gateways.** One process serves one gateway per ``[gateway:NAME]`` section (or the one
of ``[nat]`` alone, ``alg.config.load_gateways``), each bound to its own switch
(``ryu_apps.binding``) and kept in a :class:`~ryu_apps.unit.GatewayUnit` of its own:
core, store, demultiplexer, outbox, counters. A switch no gateway claims gets nothing
installed and is counted (``switches_refused``).

Each handler finds the gateway of the event's switch, which decodes it, calls the core
(``alg.engine.Gateway``, and ``alg.neighbours.NeighbourTable`` for addresses) with plain
facts and the time, and hands what comes back to ``ryu_apps.effects``, which writes the
store and queues the flow-mods (``ryu_apps.flowmods``) and packets
(``ryu_apps.packets``) in the switch's outbox (``ryu_apps.outbox``), sent in one write
when the event ends. What the app does with a frame before the core sees it is
``ryu_apps.ingress``; the switch's life (features, ports, reconcile, ready) is
``ryu_apps.lifecycle``; restore and reconciliation are ``ryu_apps.recovery``; the
demultiplexer's side is ``demux.link`` and ``ryu_apps.demux_side``.

**Restarts.** With ``[nat] state_file`` set, each event's state changes go to the store
(``ryu_apps.store``) before its flow-mods and packets. When the switch connects, the app
deletes nothing: it reads the switch's entries of its own (by cookie), gives them with
the store's records to the core, carries out what comes back, and only then handles
packets; packet-ins before that are dropped and counted (``packet_ins_before_ready``),
for their senders to repeat.

**Standbys.** With ``[nat] store = etcd`` every controller of a bridge connects to it;
each gateway's election (``ryu_apps.mastership``) makes one master, which alone takes
the switch over, and a controller that loses a mastership it had ends (exit status 3).

**Service manager.** Started with ``NOTIFY_SOCKET`` (systemd's ``Type=notify``), the
app says which gateways are ready and, once all are, ``READY=1`` (``ryu_apps.notify``):
a gateway is ready when its switch is READY and has confirmed that the pipeline is in
its tables (a barrier, then a configuration request whose reply the app awaits).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from alg.config import load_gateways
from alg.counters import CounterSet, counter
from alg.errors import ConfigError, StoreError
from alg.events import Output
from demux.link import HEARTBEAT
from ryu_apps import config as options
from ryu_apps import flowmods, http, notify, packets, rest, stores, wire
from ryu_apps.binding import Binder, Claim, bridge_name, describe_switch
from ryu_apps.framework import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    App,
    cfg,
    every,
    hub,
    ofp_event,
    ofproto_v1_3,
    on,
)
from ryu_apps.lifecycle import port_numbers
from ryu_apps.mastership import TICK
from ryu_apps.outbox import Outbox
from ryu_apps.packet_in import use_fast_packet_in
from ryu_apps.unit import FirstGateway, GatewayUnit

LOG = logging.getLogger("pptp_alg.gateway")
CONF = cfg.CONF
options.register(CONF)
POLL_SECONDS = 1.0


@dataclass
class ProcessCounters(CounterSet):
    """What the process counts, apart from its gateways."""

    switches_refused: int = counter(
        "Switches that connected and that no gateway binds (nothing installed)")


@dataclass
class _Unbound:
    """What an outbox sends a switch before it is bound: counted by nobody."""

    flows_installed: int = 0
    packet_outs: int = 0


def _refuse(message: str, *args: object) -> SystemExit:
    LOG.critical("refusing to start: " + message, *args)
    return SystemExit(2)


def _end(status: int, reason: str) -> None:
    """Fail-stop (``ryu_apps.mastership``): nothing more of this process reaches a switch."""
    LOG.critical("ending the controller: %s", reason)
    logging.shutdown()
    os._exit(status)


class NatGateway(App, FirstGateway):  # type: ignore[misc]
    """Ryu or os-ken application: OVS bridges as NAT firewalls with a PPTP ALG, one
    gateway per bridge."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        use_fast_packet_in()
        try:
            configs = load_gateways(*options.read(CONF))
        except ConfigError as exc:
            raise _refuse("configuration error: %s", exc) from exc
        self.process_counters = ProcessCounters()
        self.gateways: dict[str, GatewayUnit] = {}
        for name, config in configs.items():
            section = "nat" if len(configs) == 1 else f"gateway:{name}"
            try:
                self.gateways[name] = stores.gateway_unit(name, config, section,
                                                          lambda: self.now(), _end)
            except StoreError as exc:
                raise _refuse("%s", exc) from exc
        self.binder = Binder(Claim(name, unit.config.datapath_id, unit.config.bridge)
                             for name, unit in self.gateways.items())
        self._bound: dict[int, GatewayUnit] = {}
        first = next(iter(configs.values()))
        self.http: socket.socket | None = None
        if first.rest_port:
            try:
                self.http = http.listen(first.rest_host, first.rest_port)
            except ConfigError as exc:
                raise _refuse("%s", exc) from exc
            self.threads.append(hub.spawn(http.serve, self.http, rest.router(self)))
        self.threads.append(hub.spawn(every, POLL_SECONDS, "periodic work",
                                      lambda: self.periodic(self.now())))
        if any(unit.mastership for unit in self.gateways.values()):
            self.threads.append(hub.spawn(every, TICK, "elections", self.elections))
            self.threads += [hub.spawn(unit.warm_copy.follow) for unit in
                             self.gateways.values() if unit.warm_copy is not None]
        if any(unit.demux.enabled for unit in self.gateways.values()):
            self.threads.append(hub.spawn(every, HEARTBEAT, "GRE demultiplexer heartbeat",
                                          self.heartbeat))
        for claim in self.binder.claims:
            LOG.info("gateway %s configured: %s; binds to %s", claim.name,
                     self.gateways[claim.name].config.describe(), claim.describe())
        self.readiness = notify.ServiceReadiness.from_environment({
            claim.name: f"{claim.name} ({claim.describe()})" for claim in self.binder.claims})
        self.tell_readiness()

    @staticmethod
    def now() -> float:
        """The cores' clock: seconds, monotonic."""
        return time.monotonic()

    def unit_of(self, dp: Any) -> GatewayUnit | None:
        """The gateway bound to ``dp``, None for a switch no gateway has now."""
        if dp is None:
            return None
        unit = self._bound.get(dp.id)
        return unit if unit is not None and unit.datapath is dp else None

    def tell_readiness(self) -> None:
        """Tell the service manager which gateways are ready (``ryu_apps.notify``)."""
        self.readiness.tell(self.gateways)

    # The switches.

    @on(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev: Any) -> None:
        """Any switch: its port description names its bridge, which binds it."""
        dp = ev.msg.datapath
        outbox = Outbox(_Unbound())
        outbox.connect(dp)
        with outbox:
            outbox.request(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))

    @on(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _switch_gone(self, ev: Any) -> None:
        unit = self.unit_of(ev.datapath)
        if unit is not None:
            unit.gone()
            self.tell_readiness()

    @on(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _port_desc(self, ev: Any) -> None:
        dp = ev.msg.datapath
        numbers = port_numbers(ev.msg.body)
        bridge = bridge_name(numbers)
        claim = self.binder.bind(dp.id, bridge)
        if claim is None:
            self.process_counters.switches_refused += 1
            LOG.error("%s connected, but no gateway binds it (%s): nothing installed",
                      describe_switch(dp.id, bridge),
                      "; ".join(f"{c.name}: {c.describe()}" for c in self.binder.claims))
            return
        unit = self.gateways[claim.name]
        self._bound = {k: v for k, v in self._bound.items() if v is not unit}
        self._bound[dp.id] = unit
        unit.connected(dp, numbers, bridge)
        self.tell_readiness()

    @on(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev: Any) -> None:
        unit = self.unit_of(ev.msg.datapath)
        if unit is not None:
            unit.port_status(ev.msg)

    @on(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev: Any) -> None:
        unit = self.unit_of(ev.msg.datapath)
        if unit is not None:
            unit.packet_in(ev.msg)

    @on(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev: Any) -> None:
        unit = self.unit_of(ev.msg.datapath)
        if unit is not None:
            unit.flow_stats(ev.msg)
            self.tell_readiness()

    @on(ofp_event.EventOFPGetConfigReply, MAIN_DISPATCHER)
    def _config_reply(self, ev: Any) -> None:
        """The switch answered :meth:`tell_readiness`' request: its pipeline is in."""
        self.readiness.answered(ev.msg.datapath, self.gateways)

    @on(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _flow_removed(self, ev: Any) -> None:
        unit = self.unit_of(ev.msg.datapath)
        if unit is not None:
            unit.flow_removed(ev.msg)

    @on(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    def _role_reply(self, ev: Any) -> None:
        unit = self.unit_of(ev.msg.datapath)
        if unit is not None:
            unit.role_reply(bytes(ev.msg.buf))
            self.tell_readiness()

    @on(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev: Any) -> None:
        expected = flowmods.expected_error(ev.msg.type, ev.msg.code)
        unit = self.unit_of(getattr(ev.msg, "datapath", None))
        if unit is not None and ev.msg.type == wire.OFPET_ROLE_REQUEST_FAILED:
            unit.role_refused(bytes(ev.msg.data))
            expected = True
        LOG.log(logging.DEBUG if expected else logging.ERROR,
                "gateway %s: switch reported error type=%s code=%s",
                unit.name if unit is not None else "none", ev.msg.type, ev.msg.code)

    # Frames, the demultiplexers and time: each gateway its own.

    def handle_frame(self, dp: Any, in_port: int, data: bytes, expired: bool = False,
                     table: int = 0) -> None:
        """Act on one frame from switch ``dp`` (``GatewayUnit.handle_frame``)."""
        unit = self.unit_of(dp)
        if unit is not None:
            unit.handle_frame(dp, in_port, data, expired, table)

    def apply(self, dp: Any, output: Output, original: packets.Ipv4 | None = None) -> None:
        """Carry out one core output of the gateway of switch ``dp``."""
        unit = self.unit_of(dp)
        if unit is not None:
            unit.apply(output, original)

    def heartbeat(self) -> None:
        """Each gateway's demultiplexer probe."""
        for unit in self.gateways.values():
            self._each(unit, unit.heartbeat)

    def elections(self) -> None:
        """Each gateway's election (``ryu_apps.mastership``)."""
        for unit in self.gateways.values():
            if unit.mastership is not None:
                self._each(unit, unit.mastership.tick)

    def periodic(self, now: float) -> None:
        """Each gateway's periodic work (``GatewayUnit.periodic``)."""
        for unit in self.gateways.values():
            self._each(unit, lambda unit=unit: unit.periodic(now))

    @staticmethod
    def _each(unit: GatewayUnit, work: Any) -> None:
        """One gateway's work; its failure is logged and leaves the others' alone."""
        try:
            work()
        except Exception:
            LOG.exception("gateway %s: periodic work failed", unit.name)
