"""One gateway's election carried out: ``alg.election``'s actions turned into etcd
requests (``ryu_apps.etcd_election``), role requests to the switch
(``ryu_apps.roles``), and the gateway's promotion, stopped or resumed calls, and demotion.

With ``[nat] store = etcd`` every controller of a bridge connects to it; each gateway's
:class:`Mastership` decides, with the others' through etcd, which controller is its
master. The process's poller calls :meth:`Mastership.tick` every :data:`TICK` seconds;
the shim hands it the switch's connection, disconnection and role answers.

**Promotion** (:class:`~alg.election.Restore`): the gateway takes its switch over as a
restarted controller does: it reads its entries of the switch, loads the records and
reconciles (``ryu_apps.recovery``), and only then handles packet-ins. The records come
from the warm copy the process keeps by a watch (``ryu_apps.warm_copy``) once it reached
this controller's generation, else from a read of etcd.

**Demotion** (:class:`~alg.election.Demote`): the process ends (fail-stop, exit status
:data:`DEMOTED_EXIT`), as Kubernetes' controllers end when they lose their leader
election: a deposed master's state is not trusted again; its service manager starts it
anew, as a standby. The switch has made its connection slave already, or does so as soon
as the new master asks, whatever this process still sends.

**Cut off from etcd** (:class:`~alg.election.StopNewCalls`): the gateway keeps
forwarding, refuses new calls (``alg.engine.Gateway.stop_new_calls``) and defers its
records' writes; when a keep-alive succeeds again the deferred writes go first, then new
calls are set up again. A write that fails while new calls are not stopped ends the
process before any of that event's messages leave, so nothing is handed out that etcd
has not recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from alg.election import (
    HOLDING,
    Action,
    AskMaster,
    AskSlave,
    Campaign,
    Demote,
    Election,
    KeepAlive,
    Resign,
    Restore,
    ResumeNewCalls,
    State,
    StopNewCalls,
    SwitchRole,
)
from alg.errors import StoreError, WireError
from ryu_apps import roles, wire
from ryu_apps.etcd_election import ElectionKey
from ryu_apps.etcd_store import Guard

LOG = logging.getLogger("pptp_alg.gateway")
TICK = 0.25
"""Seconds between two looks at the election: its time, and the key as etcd has it."""
DEMOTED_EXIT = 3
"""The exit status of a controller that lost the mastership it had."""


class ElectionCounters(Protocol):
    """Where a :class:`Mastership` counts (``ryu_apps.effects.AppCounters``)."""

    election_request_failures: int


class Promotable(Protocol):
    """What a :class:`Mastership` does to its gateway."""

    name: str

    def send_roles(self, messages: list[wire.Message]) -> None:
        """Send role requests to the switch."""

    def take_over(self) -> None:
        """Master: read the switch's entries, restore and reconcile, then act."""

    def stop_new_calls(self) -> None:
        """Refuse new calls, defer the records' writes."""

    def resume_new_calls(self) -> bool:
        """Write the deferred records; if that worked, set up new calls again."""


class Mastership:
    """One gateway's part in its switch's election.

    Args:
        election: the election's logic.
        key: the election key's requests.
        unit: the gateway.
        clock: the process's monotonic clock.
        end: ends the process (fail-stop) with a status and a reason.
        counters: where its requests that failed are counted.
    """

    def __init__(self, election: Election, key: ElectionKey, unit: Promotable,
                 clock: Callable[[], float], end: Callable[[int, str], None],
                 counters: ElectionCounters) -> None:
        self.election = election
        self.key = key
        self.unit = unit
        self.clock = clock
        self.end = end
        self.kept_alive_at: float | None = None
        """When the last keep-alive that succeeded was sent (None: none yet)."""
        self.counters = counters

    @property
    def role(self) -> str:
        """The election's state by name (``master``, ``standby``...)."""
        return self.election.state.value

    @property
    def standing_by(self) -> bool:
        """True while a standby whose switch granted it the slave role."""
        election = self.election
        return (election.connected and election.switch_role is SwitchRole.SLAVE
                and election.state in (State.STANDBY, State.CANDIDATE))

    def lease_age(self, now: float) -> float | None:
        """Seconds since the lease was last kept alive, None while not holding."""
        if self.election.state in (State.STANDBY, State.CANDIDATE) or self.kept_alive_at is None:
            return None
        return max(0.0, now - self.kept_alive_at)

    def guard(self) -> Guard | None:
        """What a write of the records checks: this controller still holds the key."""
        if not self.election.is_master(self.clock()):
            return None
        return self.key.guard(self.election.generation)

    # Events.

    def switch_connected(self) -> None:
        """The switch connected: learn the key's generation, then ask for slave with it
        before anything else (the switch refuses a generation below the highest it
        accepted as stale)."""
        try:
            seen = self.key.observe()
        except StoreError:
            self._failed()
        else:
            if seen.holder is not None:
                self._run(self.election.holder_changed(
                    seen.holder.name, seen.holder.generation, self.clock()))
        self._run(self.election.switch_connected(self.clock()))

    def switch_disconnected(self) -> None:
        """The switch's connection is gone."""
        self._run(self.election.switch_disconnected(self.clock()))

    def role_reply(self, buf: bytes) -> None:
        """The switch granted a role request (a ROLE_REPLY)."""
        answer = self._decode(buf)
        if answer is not None:
            self._run(self.election.role_granted(*answer, self.clock()))

    def role_refused(self, request: bytes) -> None:
        """The switch refused a role request (the error quotes it)."""
        answer = self._decode(request)
        if answer is not None:
            LOG.log(logging.WARNING if answer[0] is SwitchRole.MASTER else logging.INFO,
                    "gateway %s: the switch refused %s with generation %d as stale",
                    self.unit.name, answer[0].value, answer[1])
            self._run(self.election.role_refused(*answer, self.clock()))

    def write_failed(self, exc: StoreError) -> None:
        """A write of the records failed while new calls were set up, or they could not
        be read at promotion: end the process before anything more leaves."""
        self.end(DEMOTED_EXIT, f"gateway {self.unit.name}: the records in etcd: {exc}; "
                 "nothing of the event was sent")

    def tick(self) -> None:
        """Time passed: the election's moves, and (not holding the key) the key as etcd
        has it now. A holder learns what it must from its keep-alives: reading the key
        too would hold a master cut off from etcd a second longer each time."""
        now = self.clock()
        self._run(self.election.tick(now))
        if not self.election.connected or self.election.state in HOLDING:
            return
        try:
            seen = self.key.observe()
        except StoreError:
            self._failed()
            return
        now = self.clock()
        if seen.holder is None:
            self._run(self.election.key_deleted(seen.revision, now))
        else:
            self._run(self.election.holder_changed(seen.holder.name, seen.holder.generation,
                                                   now))

    # Actions.

    def _failed(self) -> None:
        self.counters.election_request_failures += 1

    def _run(self, actions: list[Action]) -> None:
        queue = list(actions)
        while queue:
            queue.extend(self._act(queue.pop(0)))

    def _act(self, action: Action) -> list[Action]:
        election, now = self.election, self.clock
        match action:
            case AskSlave() | AskMaster():
                self.unit.send_roles(roles.role_messages([action]))
            case Campaign(lease_seconds, ballot):
                try:
                    won, holder = self.key.campaign(lease_seconds)
                except StoreError:
                    self._failed()
                    return election.campaign_failed(ballot, now())
                if won and holder is not None:
                    self.kept_alive_at = now()
                    LOG.info("gateway %s: elected with generation %d", self.unit.name,
                             holder.generation)
                    return election.campaign_won(holder.generation, ballot, now())
                if holder is None:
                    return election.campaign_failed(ballot, now())
                return election.campaign_lost(holder.name, holder.generation, ballot, now())
            case KeepAlive(at):
                try:
                    alive = self.key.keep_alive()
                except StoreError:
                    self._failed()
                    return election.store_unreachable(now())
                if not alive:
                    return election.lease_lost(now())
                self.kept_alive_at = at
                return election.kept_alive(at, now())
            case Resign(generation):
                try:
                    self.key.resign(generation)
                except StoreError:
                    self._failed()
            case Restore():
                LOG.info("gateway %s: master with generation %d; taking the switch over",
                         self.unit.name, election.generation)
                self.unit.take_over()
            case StopNewCalls():
                LOG.error("gateway %s: etcd does not answer: new calls are refused and "
                          "the records' writes deferred until it does", self.unit.name)
                self.unit.stop_new_calls()
            case ResumeNewCalls():
                if not self.unit.resume_new_calls():
                    return election.store_unreachable(now())
                LOG.info("gateway %s: etcd answers again: deferred records written, new "
                         "calls set up again", self.unit.name)
            case Demote():
                self.end(DEMOTED_EXIT, f"gateway {self.unit.name}: no longer master "
                          f"(generation {election.generation})")
        return []

    @staticmethod
    def _decode(buf: bytes) -> tuple[SwitchRole, int] | None:
        try:
            return roles.decode_answer(buf)
        except WireError:
            return None
