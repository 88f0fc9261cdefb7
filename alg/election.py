"""Which controller is master of one switch: an election on a store's lease, fenced by
the switch's generation ids.

One :class:`Election` per (controller process, switch). It is driven by what its store
and its switch answer and by the time, and returns what to do next
(:data:`Action`): ask the switch for a role, campaign for the election key, keep the
lease alive, give it up, restore, stop or resume setting up calls, demote. It sends
nothing itself.

The store (etcd) holds one key per switch, created in a transaction "create if absent"
with the campaigner's lease. The key's create revision is the holder's **generation**:
revisions only rise, so every new holder's generation is above every earlier one.

The switch (OpenFlow 1.3 section 6.3.5): a connection starts *equal*. Before anything
else the controller asks for the *slave* role with the highest generation it knows, so a
standby never changes the switch. Only the holder of the key asks for *master*, with its
generation; the switch remembers the highest generation it accepted and refuses a
master or slave request with a lower one (``OFPRRFC_STALE``), and when one connection
becomes master the switch makes the others slave. A deposed master's requests therefore
fail at the switch, and its connection is slave, whatever it still believes.

States (:class:`State`) and what moves them (:attr:`Election.MOVES`):

* ``STANDBY``: not the holder. Every ``keepalive_seconds`` while the switch is
  connected, and at once when the watch says the key was deleted, it campaigns.
* ``CANDIDATE``: a campaign sent, its answer awaited (given up after the lease time).
* ``ELECTED``: the key won; the lease is kept alive and the switch asked for master.
  Nothing is sent to the switch but role requests until it grants master.
* ``MASTER``: the switch granted master with this generation: :class:`Restore` (take
  back the store's records and reconcile the switch, as a restart does), then act.
* ``MASTER_CUT_OFF``: master, the store not answering: calls set up stay, no new call
  is set up (:class:`StopNewCalls`), the lease is still being kept alive.

Failures:

* **Lease expiry.** The holder counts its lease from when it sent the request that
  granted or renewed it (:class:`Campaign`, :class:`KeepAlive`): the store counts from
  when it received it, later, so the holder's own deadline passes first. At its deadline
  the holder steps down (:class:`Demote` if it was master, :class:`Resign`, and asks for
  slave). A standby can win only once the store expired the lease, after that deadline:
  with one clock, at most one controller is master at any instant
  (:meth:`Election.is_master`). Across hosts' clocks the switch's generation check is
  what fences.
* **Store outage.** A master that cannot reach the store keeps forwarding but sets up
  no new call, keeps trying to keep its lease alive, and resumes when a keep-alive sent
  before its deadline succeeds; at its deadline it steps down. Meanwhile a standby that
  reaches the store wins once the lease expired there, and its master request makes
  the old master's connection slave.
* **Stale generation.** The switch refusing this controller's master request means it
  accepted a higher generation: the controller steps down and resigns, and campaigns
  again after ``keepalive_seconds`` (a generation learnt by a later campaign is higher).
* **Switch connection lost.** A holder steps down and resigns (another controller still
  connected may take over); a connection starts equal, so every (re)connection begins
  with a slave request.

Each controller process needs its own ``controller_id`` (a restarted process a new one):
the key's holder names the process whose lease it carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

LEASE_SECONDS = 3.0
"""The lease's time to live: a master that dies is replaced within about this (plus a
keep-alive interval, or at once when the standby's watch reports the key deleted). Three
keep-alive intervals, so two lost keep-alives cost nothing, and above etcd's shortest
lease (1.5 times its election timeout, 1.5 s with its defaults)."""
KEEPALIVE_SECONDS = 1.0
"""How often the holder keeps its lease alive, and a standby campaigns."""


class State(Enum):
    """Where one controller stands in one switch's election (see the module)."""

    STANDBY = "standby"
    CANDIDATE = "candidate"
    ELECTED = "elected"
    MASTER = "master"
    MASTER_CUT_OFF = "master cut off"


class SwitchRole(Enum):
    """A controller connection's role at the switch (OpenFlow 1.3 ``OFPCR_ROLE_*``)."""

    EQUAL = "equal"
    MASTER = "master"
    SLAVE = "slave"


@dataclass(frozen=True, slots=True)
class AskSlave:
    """Send the switch a role request for slave with ``generation``."""

    generation: int


@dataclass(frozen=True, slots=True)
class AskMaster:
    """Send the switch a role request for master with ``generation`` (this controller's)."""

    generation: int


@dataclass(frozen=True, slots=True)
class Campaign:
    """Grant a new lease of ``lease_seconds`` and create the key with it if absent;
    answer with :meth:`Election.campaign_won`, :meth:`Election.campaign_lost` or
    :meth:`Election.campaign_failed`, passing ``ballot`` (which campaign it answers)."""

    lease_seconds: float
    ballot: int


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Keep the lease alive; answer with :meth:`Election.kept_alive` (passing ``at``),
    :meth:`Election.lease_lost` or :meth:`Election.store_unreachable`."""

    at: float


@dataclass(frozen=True, slots=True)
class Resign:
    """Delete the key if its create revision is ``generation`` (a transaction comparing
    it), and revoke the lease it was created with."""

    generation: int


@dataclass(frozen=True, slots=True)
class Restore:
    """Promoted: take back the store's records and reconcile the switch, as a restart
    does; then act as master, calls set up."""


@dataclass(frozen=True, slots=True)
class StopNewCalls:
    """Keep forwarding, set up no new call (the request gets its refusal)."""


@dataclass(frozen=True, slots=True)
class ResumeNewCalls:
    """Set up new calls again."""


@dataclass(frozen=True, slots=True)
class Demote:
    """No longer master: send the switch nothing but role requests, set up nothing."""


Action = (AskSlave | AskMaster | Campaign | KeepAlive | Resign | Restore | StopNewCalls
          | ResumeNewCalls | Demote)
"""What an :class:`Election` asks its app to do, in order."""

HOLDING = frozenset({State.ELECTED, State.MASTER, State.MASTER_CUT_OFF})
"""The states in which this controller holds the key."""
MASTERS = frozenset({State.MASTER, State.MASTER_CUT_OFF})

S, C, E, M, X = (State.STANDBY, State.CANDIDATE, State.ELECTED, State.MASTER,
                 State.MASTER_CUT_OFF)


class Election:
    """One controller's part in one switch's election.

    Args:
        controller_id: this controller process's name, unique among the processes.
        lease_seconds: the lease's time to live.
        keepalive_seconds: how often the lease is kept alive and a standby campaigns.
    """

    MOVES: ClassVar[Mapping[str, frozenset[tuple[State, State]]]] = {
        "tick": frozenset({(S, C), (C, S), (E, S), (M, S), (X, S)}),
        "switch_connected": frozenset({(E, S), (M, S), (X, S)}),
        "switch_disconnected": frozenset({(C, S), (E, S), (M, S), (X, S)}),
        "campaign_won": frozenset({(C, E)}),
        "campaign_lost": frozenset({(C, S)}),
        "campaign_failed": frozenset({(C, S)}),
        "kept_alive": frozenset({(X, M)}),
        "lease_lost": frozenset({(E, S), (M, S), (X, S)}),
        "store_unreachable": frozenset({(C, S), (M, X)}),
        "key_deleted": frozenset({(S, C), (E, C), (M, C), (X, C)}),
        "holder_changed": frozenset({(E, S), (M, S), (X, S)}),
        "role_granted": frozenset({(E, M), (E, X)}),
        "role_refused": frozenset({(E, S), (M, S), (X, S)}),
    }
    """The state changes each input may make, by the input's method name: (from, to).
    Every other input leaves the state as it is. ``tests/unit/test_election.py`` drives
    every input from every state and checks that what happens is exactly this."""

    def __init__(self, controller_id: str, lease_seconds: float = LEASE_SECONDS,
                 keepalive_seconds: float = KEEPALIVE_SECONDS) -> None:
        if not 0 < keepalive_seconds < lease_seconds:
            raise ValueError("the keep-alive interval must be shorter than the lease")
        self.controller_id = controller_id
        self.lease_seconds = lease_seconds
        self.keepalive_seconds = keepalive_seconds
        self.state = State.STANDBY
        self.generation = 0
        """This controller's generation while it holds the key (0 before it first won)."""
        self.known_generation = 0
        """The highest generation this controller has learnt of (its own or a holder's)."""
        self.holder: str | None = None
        """The key's holder, as last learnt."""
        self.connected = False
        self.switch_role: SwitchRole | None = None
        """The connection's role as the switch last granted it (None: no connection)."""
        self.deadline = 0.0
        """While holding: when the lease may have expired, by this controller's count."""
        self._store_ok = True
        self._campaign_at = 0.0
        self._ballot = 0
        self._next_campaign = 0.0
        self._hold_until = 0.0
        self._next_keepalive = 0.0
        self._asked_slave: int | None = None

    def is_master(self, now: float) -> bool:
        """Whether this controller may act as the switch's master at ``now``."""
        return self.state in MASTERS and now < self.deadline

    def may_set_up_calls(self, now: float) -> bool:
        """Whether this controller may set up new calls at ``now``."""
        return self.state is State.MASTER and now < self.deadline

    # The time.

    def tick(self, now: float) -> list[Action]:
        """Time passed: a holder whose deadline came steps down, a holder keeps its
        lease alive, a standby campaigns, a campaign unanswered for the lease time is
        given up."""
        if self.state in HOLDING:
            if now >= self.deadline:
                return self._step_down(now, 0.0)
            if now >= self._next_keepalive:
                self._next_keepalive = now + self.keepalive_seconds
                return [KeepAlive(now)]
            return []
        if self.state is State.CANDIDATE:
            if now >= self._campaign_at + self.lease_seconds:
                self.state = State.STANDBY
            return []
        if self.connected and now >= self._next_campaign:
            return self._campaign(now)
        return []

    # The switch.

    def switch_connected(self, now: float) -> list[Action]:
        """The switch connected (its connection is equal): ask for slave first."""
        out = self._step_down(now, 0.0, ask_slave=False) if self.state in HOLDING else []
        self.connected = True
        self.switch_role = SwitchRole.EQUAL
        self._asked_slave = None
        return out + self._ask_slave()

    def switch_disconnected(self, now: float) -> list[Action]:
        """The switch's connection is gone: a holder steps down and resigns."""
        out = self._step_down(now, 0.0, ask_slave=False) if self.state in HOLDING else []
        if self.state is State.CANDIDATE:
            self.state = State.STANDBY
        self.connected = False
        self.switch_role = None
        self._asked_slave = None
        return out

    def role_granted(self, role: SwitchRole, generation: int, now: float) -> list[Action]:
        """The switch answered a role request: ``role`` with ``generation``. Master with
        this controller's generation promotes it: :class:`Restore`."""
        if self.connected:
            self.switch_role = role
        if role is not SwitchRole.MASTER or self.state is not State.ELECTED:
            return []
        if generation != self.generation:
            return []
        if self._store_ok:
            self.state = State.MASTER
            return [Restore()]
        self.state = State.MASTER_CUT_OFF
        return [Restore(), StopNewCalls()]

    def role_refused(self, role: SwitchRole, generation: int, now: float) -> list[Action]:
        """The switch refused a role request for ``role`` with ``generation`` as stale.
        A master request with this controller's generation: step down and resign. A
        slave request: asked again when a higher generation is learnt."""
        if role is SwitchRole.SLAVE and self._asked_slave == generation:
            self._asked_slave = None
        if (role is not SwitchRole.MASTER or self.state not in HOLDING
                or generation != self.generation):
            return []
        return self._step_down(now, self.keepalive_seconds, ask_slave=False)

    # The store.

    def campaign_won(self, revision: int, ballot: int, now: float) -> list[Action]:
        """Campaign ``ballot`` created the key with this controller's lease at create
        revision ``revision``: ask the switch for master. A win for a campaign given up
        is resigned."""
        if self.state is not State.CANDIDATE or ballot != self._ballot:
            if self.state in HOLDING and revision == self.generation:
                return []
            return [Resign(revision)]
        self.state = State.ELECTED
        self.generation = revision
        self.known_generation = max(self.known_generation, revision)
        self.holder = self.controller_id
        self.deadline = self._campaign_at + self.lease_seconds
        self._next_keepalive = self._campaign_at + self.keepalive_seconds
        self._store_ok = True
        return [AskMaster(revision)]

    def campaign_lost(self, holder: str, revision: int, ballot: int, now: float
                      ) -> list[Action]:
        """Campaign ``ballot`` found the key held by ``holder`` since create revision
        ``revision``. Held by this controller's own name (an earlier campaign's answer
        lost): resigned, so the next campaign starts from a lease whose start it
        knows."""
        if self.state is not State.CANDIDATE or ballot != self._ballot:
            return []
        self.state = State.STANDBY
        self._next_campaign = now + self.keepalive_seconds
        if holder == self.controller_id:
            return [Resign(revision)]
        return self._learn(holder, revision)

    def campaign_failed(self, ballot: int, now: float) -> list[Action]:
        """Campaign ``ballot`` got no answer from the store."""
        if self.state is State.CANDIDATE and ballot == self._ballot:
            self.state = State.STANDBY
            self._next_campaign = now + self.keepalive_seconds
        return []

    def kept_alive(self, at: float, now: float) -> list[Action]:
        """A keep-alive sent at ``at`` (its :class:`KeepAlive`'s) succeeded: the lease
        runs from ``at``. A master cut off from the store resumes new calls."""
        if self.state not in HOLDING or at < self._campaign_at:
            return []
        self.deadline = max(self.deadline, at + self.lease_seconds)
        self._store_ok = True
        if self.state is State.MASTER_CUT_OFF:
            self.state = State.MASTER
            return [ResumeNewCalls()]
        return []

    def lease_lost(self, now: float) -> list[Action]:
        """The store answered that this controller's lease is gone: step down."""
        if self.state not in HOLDING:
            return []
        return self._step_down(now, 0.0)

    def store_unreachable(self, now: float) -> list[Action]:
        """A request to the store got no answer: a master stops setting up new calls
        (its lease runs on until its deadline), a campaign is given up."""
        if self.state is State.CANDIDATE:
            return self.campaign_failed(self._ballot, now)
        if self.state in HOLDING:
            self._store_ok = False
        if self.state is State.MASTER:
            self.state = State.MASTER_CUT_OFF
            return [StopNewCalls()]
        return []

    def key_deleted(self, revision: int, now: float) -> list[Action]:
        """The watch saw the key deleted at revision ``revision``: campaign at once (a
        holder whose own key went steps down first), unless this controller stepped down
        for a stale generation within ``keepalive_seconds``. A deletion of an older
        holder's key is ignored."""
        if revision <= self.known_generation:
            return []
        self.holder = None
        out: list[Action] = []
        if self.state in HOLDING:
            out = self._step_down(now, 0.0)
        if self.state is State.STANDBY and self.connected and now >= self._hold_until:
            out += self._campaign(now)
        return out

    def holder_changed(self, holder: str, revision: int, now: float) -> list[Action]:
        """The watch saw the key created by ``holder`` at create revision ``revision``:
        a holder of an older generation steps down, and the slave request follows the
        new generation."""
        if revision <= self.known_generation or holder == self.controller_id:
            return []
        out = self._step_down(now, 0.0, ask_slave=False) if self.state in HOLDING else []
        return out + self._learn(holder, revision)

    # Moves.

    def _campaign(self, now: float) -> list[Action]:
        self.state = State.CANDIDATE
        self._campaign_at = now
        self._ballot += 1
        return [Campaign(self.lease_seconds, self._ballot)]

    def _learn(self, holder: str, revision: int) -> list[Action]:
        if revision > self.known_generation:
            self.known_generation = revision
            self.holder = holder
        return self._ask_slave()

    def _ask_slave(self) -> list[Action]:
        """Ask for slave with the highest generation known, unless already asked so."""
        if not self.connected or self._asked_slave == self.known_generation:
            return []
        if self.state in HOLDING:
            return []
        self._asked_slave = self.known_generation
        return [AskSlave(self.known_generation)]

    def _step_down(self, now: float, wait: float, ask_slave: bool = True) -> list[Action]:
        """Leave the key: demote (if master), resign, ask for slave; campaign again after
        ``wait``."""
        out: list[Action] = [Demote()] if self.state in MASTERS else []
        out.append(Resign(self.generation))
        self.state = State.STANDBY
        self.holder = None
        self._store_ok = True
        self._next_campaign = self._hold_until = now + wait
        if ask_slave and self.connected:
            self._asked_slave = self.known_generation
            out.append(AskSlave(self.known_generation))
        return out
