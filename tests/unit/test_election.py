"""The election and its fencing (``alg.election``) with a fake store and a fake clock.

The fake store is etcd as the election uses it: leases with a time to live on the fake
clock, one key created in a transaction "create if absent" whose create revision is the
holder's generation, revisions that only rise, and watch events. The fake switch keeps
the highest generation it accepted and refuses lower ones, and makes the other
connections slave when one becomes master (OpenFlow 1.3 section 6.3.5, as Open vSwitch
does). Requests are handled when sent; their answers and watch events wait in each
controller's queues until delivered, so the tests choose every interleaving.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alg.election import (
    KEEPALIVE_SECONDS,
    LEASE_SECONDS,
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


@dataclass
class Lease:
    owner: str
    expires: float


@dataclass
class Key:
    holder: str
    lease: int
    create_revision: int


class FakeStore:
    """etcd's part in the election: leases, one key, revisions, watchers."""

    def __init__(self) -> None:
        self.revision = 1
        self.leases: dict[int, Lease] = {}
        self.key: Key | None = None
        self.next_lease = 1
        self.watchers: dict[str, Callable[[tuple[Any, ...]], None]] = {}

    def expire(self, now: float) -> None:
        for lease_id, lease in list(self.leases.items()):
            if now >= lease.expires:
                self.revoke(lease_id)

    def revoke(self, lease_id: int) -> None:
        self.leases.pop(lease_id, None)
        if self.key is not None and self.key.lease == lease_id:
            self.key = None
            self.revision += 1
            for notify in self.watchers.values():
                notify(("key_deleted", self.revision))

    def campaign(self, owner: str, ttl: float, ballot: int, now: float
                 ) -> tuple[Any, ...]:
        lease_id = self.next_lease
        self.next_lease += 1
        self.leases[lease_id] = Lease(owner, now + ttl)
        if self.key is not None:
            return ("campaign_lost", self.key.holder, self.key.create_revision, ballot)
        self.revision += 1
        self.key = Key(owner, lease_id, self.revision)
        for name, notify in self.watchers.items():
            if name != owner:
                notify(("holder_changed", owner, self.revision))
        return ("campaign_won", self.revision, ballot)

    def keepalive(self, owner: str, ttl: float, now: float) -> bool:
        if self.key is None or self.key.holder != owner or self.key.lease not in self.leases:
            return False
        self.leases[self.key.lease].expires = now + ttl
        return True

    def resign(self, generation: int) -> None:
        if self.key is not None and self.key.create_revision == generation:
            self.revoke(self.key.lease)


class FakeSwitch:
    """A switch's role handling: the highest generation accepted, each connection's
    role."""

    def __init__(self) -> None:
        self.generation: int | None = None
        self.roles: dict[str, SwitchRole] = {}
        self.masters_granted: list[tuple[str, int]] = []

    def stale(self, generation: int) -> bool:
        return self.generation is not None and generation < self.generation

    def role_request(self, name: str, role: SwitchRole, generation: int) -> bool:
        if self.stale(generation):
            return False
        self.generation = generation
        if role is SwitchRole.MASTER:
            for other, held in self.roles.items():
                if held is SwitchRole.MASTER:
                    self.roles[other] = SwitchRole.SLAVE
            if (name, generation) not in self.masters_granted:
                self.masters_granted.append((name, generation))
        self.roles[name] = role
        return True

    def master(self) -> str | None:
        return next((n for n, r in self.roles.items() if r is SwitchRole.MASTER), None)


@dataclass
class Controller:
    election: Election
    store_queue: deque[tuple[Any, ...]] = field(default_factory=deque)
    switch_queue: deque[tuple[Any, ...]] = field(default_factory=deque)
    cut_off: bool = False
    actions: list[Action] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.election.controller_id


class Lab:
    """Controllers of one switch sharing one fake store and one fake clock."""

    def __init__(self, count: int, lease: float = LEASE_SECONDS,
                 keepalive: float = KEEPALIVE_SECONDS) -> None:
        self.now = 0.0
        self.store = FakeStore()
        self.switch = FakeSwitch()
        self.lease, self.keepalive = lease, keepalive
        self.controllers: dict[int, Controller] = {}
        self.incarnations = 0
        for index in range(count):
            self.start(index)

    def start(self, index: int) -> None:
        self.incarnations += 1
        name = f"c{index}.{self.incarnations}"
        ctl = Controller(Election(name, self.lease, self.keepalive))
        self.controllers[index] = ctl
        self.store.watchers[name] = lambda event, c=ctl: (
            None if c.cut_off else c.store_queue.append(event))
        self.switch.roles[name] = SwitchRole.EQUAL
        self.act(ctl, ctl.election.switch_connected(self.now))

    def kill(self, index: int) -> None:
        ctl = self.controllers.pop(index, None)
        if ctl is not None:
            del self.store.watchers[ctl.name]
            del self.switch.roles[ctl.name]

    def act(self, ctl: Controller, actions: list[Action]) -> None:
        """Carry out actions: requests handled now, their answers queued."""
        ctl.actions += actions
        e = ctl.election
        for action in actions:
            if isinstance(action, Campaign):
                ctl.store_queue.append(
                    ("campaign_failed", action.ballot) if ctl.cut_off else
                    self.store.campaign(ctl.name, action.lease_seconds, action.ballot,
                                        self.now))
            elif isinstance(action, KeepAlive):
                if ctl.cut_off:
                    ctl.store_queue.append(("store_unreachable",))
                elif self.store.keepalive(ctl.name, e.lease_seconds, self.now):
                    ctl.store_queue.append(("kept_alive", action.at))
                else:
                    ctl.store_queue.append(("lease_lost",))
            elif isinstance(action, Resign):
                if not ctl.cut_off:
                    self.store.resign(action.generation)
            elif isinstance(action, AskSlave | AskMaster):
                role = SwitchRole.SLAVE if isinstance(action, AskSlave) else SwitchRole.MASTER
                granted = self.switch.role_request(ctl.name, role, action.generation)
                ctl.switch_queue.append(
                    ("role_granted" if granted else "role_refused", role, action.generation))

    def deliver(self, ctl: Controller, queue: deque[tuple[Any, ...]]) -> None:
        if queue:
            name, *args = queue.popleft()
            self.act(ctl, getattr(ctl.election, name)(*args, self.now))

    def tick(self, ctl: Controller) -> None:
        self.act(ctl, ctl.election.tick(self.now))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.store.expire(self.now)

    def run(self, seconds: float, step: float = 0.1) -> None:
        """Time passes with every controller ticking and every answer delivered."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.advance(step)
            self.settle()

    def settle(self) -> None:
        for _ in range(50):
            busy = False
            for ctl in list(self.controllers.values()):
                self.tick(ctl)
                while ctl.store_queue or ctl.switch_queue:
                    busy = True
                    self.deliver(ctl, ctl.store_queue)
                    self.deliver(ctl, ctl.switch_queue)
            if not busy:
                return

    def masters(self) -> list[Controller]:
        return [c for c in self.controllers.values() if c.election.is_master(self.now)]

    def check(self) -> None:
        """The invariants of the election and its fencing."""
        assert len(self.masters()) <= 1, [c.name for c in self.masters()]
        granted = [g for _, g in self.switch.masters_granted]
        assert granted == sorted(set(granted)), "master generations strictly rise"
        believers = sorted((c for c in self.controllers.values()
                            if c.election.state in (State.MASTER, State.MASTER_CUT_OFF)),
                           key=lambda c: c.election.generation)
        for deposed in believers[:-1]:
            assert self.switch.stale(deposed.election.generation), deposed.name
            assert self.switch.roles[deposed.name] is not SwitchRole.MASTER
        for ctl in self.masters():
            assert self.switch.master() == ctl.name


def first_master(lab: Lab, limit: float = 10.0) -> Controller:
    end = lab.now + limit
    while not lab.masters():
        assert lab.now < end, "no master"
        lab.run(0.1)
    return lab.masters()[0]


def test_one_controller_becomes_master_with_the_keys_revision_as_generation() -> None:
    lab = Lab(3)
    master = first_master(lab)
    assert master.election.generation == lab.store.key.create_revision  # type: ignore[union-attr]
    assert lab.switch.master() == master.name
    assert [c.election.state for c in lab.controllers.values()].count(State.STANDBY) == 2
    lab.run(10.0)
    lab.check()
    assert lab.masters() == [master]


def test_the_first_request_on_every_connection_is_for_slave() -> None:
    election = Election("a")
    assert election.switch_connected(0.0) == [AskSlave(0)]
    election.tick(0.0)
    election.campaign_won(5, 1, 0.0)
    election.role_granted(SwitchRole.MASTER, 5, 0.0)
    assert election.state is State.MASTER
    assert election.switch_connected(0.1)[-1] == AskSlave(5)
    assert election.state is State.STANDBY


def test_a_standby_asks_for_slave_with_the_holders_generation() -> None:
    election = Election("b")
    election.switch_connected(0.0)
    assert election.tick(0.0) == [Campaign(LEASE_SECONDS, 1)]
    assert election.campaign_lost("a", 7, 1, 0.0) == [AskSlave(7)]
    assert election.holder_changed("c", 9, 0.5) == [AskSlave(9)]
    assert election.holder_changed("c", 9, 0.6) == []
    assert election.tick(0.9) == []
    assert election.tick(1.0) == [Campaign(LEASE_SECONDS, 2)]


@pytest.mark.parametrize("watch", [True, False])
def test_a_killed_masters_standby_takes_over_within_lease_and_a_keepalive(watch: bool
                                                                         ) -> None:
    lab = Lab(2)
    master = first_master(lab)
    lab.run(5.0)
    killed_at = lab.now
    index = next(i for i, c in lab.controllers.items() if c is master)
    lab.kill(index)
    if not watch:
        for ctl in lab.controllers.values():
            ctl.cut_off = False
        lab.store.watchers.clear()
    successor = first_master(lab)
    took = lab.now - killed_at
    assert successor is not master
    assert took <= LEASE_SECONDS + KEEPALIVE_SECONDS + 0.2
    if watch:
        assert took <= LEASE_SECONDS + 0.2
    assert Restore() in successor.actions
    assert lab.switch.master() == successor.name
    assert successor.election.generation > master.election.generation
    assert lab.switch.stale(master.election.generation)


def test_a_master_cut_off_from_the_store_stops_new_calls_and_resumes_with_its_lease(
) -> None:
    lab = Lab(2)
    master = first_master(lab)
    lab.run(2.0)
    master.cut_off = True
    master.actions.clear()
    lab.run(KEEPALIVE_SECONDS)
    assert master.election.state is State.MASTER_CUT_OFF
    assert master.actions.count(StopNewCalls()) == 1
    assert master.election.is_master(lab.now) and not master.election.may_set_up_calls(
        lab.now)
    master.cut_off = False
    lab.run(1.0)
    assert master.election.state is State.MASTER
    assert ResumeNewCalls() in master.actions
    assert Demote() not in master.actions
    assert lab.masters() == [master]
    lab.check()


def test_a_master_cut_off_past_its_lease_demotes_and_the_standby_takes_over() -> None:
    lab = Lab(2)
    master = first_master(lab)
    lab.run(2.0)
    master.cut_off = True
    cut_at = lab.now
    lab.run(LEASE_SECONDS + KEEPALIVE_SECONDS)
    assert Demote() in master.actions
    assert master.election.state in (State.STANDBY, State.CANDIDATE)
    successor = first_master(lab)
    assert successor is not master and lab.now - cut_at <= LEASE_SECONDS + 1.5
    master.cut_off = False
    lab.run(5.0)
    assert lab.masters() == [successor]
    lab.check()


def test_a_master_whose_generation_the_switch_refuses_demotes() -> None:
    election = Election("a")
    election.switch_connected(0.0)
    election.tick(0.0)
    election.campaign_won(3, 1, 0.0)
    election.role_granted(SwitchRole.MASTER, 3, 0.0)
    assert election.role_refused(SwitchRole.MASTER, 3, 0.5) == [Demote(), Resign(3)]
    assert election.state is State.STANDBY and not election.is_master(0.5)
    assert election.tick(1.0) == []
    assert election.tick(1.5) == [Campaign(LEASE_SECONDS, 2)]


def test_a_refused_stale_master_request_never_reaches_master() -> None:
    lab = Lab(1)
    lab.switch.generation = 1000
    lab.run(3.0)
    ctl = lab.controllers[0]
    assert lab.masters() == [] and lab.switch.master() is None
    assert any(isinstance(a, Resign) for a in ctl.actions)
    assert ctl.election.state is not State.MASTER


def test_a_paused_master_is_fenced_by_the_switch() -> None:
    lab = Lab(2)
    master = first_master(lab)
    others = [c for c in lab.controllers.values() if c is not master]
    end = lab.now + LEASE_SECONDS + KEEPALIVE_SECONDS + 1
    while lab.now < end:
        lab.advance(0.1)
        for ctl in others:
            lab.tick(ctl)
            while ctl.store_queue or ctl.switch_queue:
                lab.deliver(ctl, ctl.store_queue)
                lab.deliver(ctl, ctl.switch_queue)
    assert master.election.state is State.MASTER and not master.election.is_master(lab.now)
    assert lab.switch.stale(master.election.generation)
    assert lab.switch.roles[master.name] is SwitchRole.SLAVE
    lab.check()
    master.store_queue.clear()
    master.switch_queue.clear()
    lab.tick(master)
    assert master.actions[-3:-1] == [Demote(), Resign(master.election.generation)]


# Every input from every state against Election.MOVES.

def reach(state: State, store_ok: bool = True) -> Election:
    e = Election("me")
    e.switch_connected(0.0)
    if state is State.STANDBY:
        e.tick(0.0)
        e.campaign_lost("other", 5, 1, 0.0)
        return e
    e.tick(0.0)
    if state is State.CANDIDATE:
        return e
    e.campaign_won(5, 1, 0.0)
    if not store_ok:
        e.store_unreachable(0.0)
    if state is State.ELECTED:
        return e
    e.role_granted(SwitchRole.MASTER, 5, 0.0)
    if state is State.MASTER_CUT_OFF:
        e.store_unreachable(0.0)
    assert e.state is state
    return e


INPUTS: dict[str, list[Callable[[Election], list[Action]]]] = {
    "tick": [lambda e: e.tick(0.5), lambda e: e.tick(1.0), lambda e: e.tick(5.0)],
    "switch_connected": [lambda e: e.switch_connected(0.5)],
    "switch_disconnected": [lambda e: e.switch_disconnected(0.5)],
    "campaign_won": [lambda e: e.campaign_won(9, 1, 0.5), lambda e: e.campaign_won(9, 0, 0.5)],
    "campaign_lost": [lambda e: e.campaign_lost("other", 9, 1, 0.5),
                      lambda e: e.campaign_lost("me", 9, 1, 0.5),
                      lambda e: e.campaign_lost("other", 9, 0, 0.5)],
    "campaign_failed": [lambda e: e.campaign_failed(1, 0.5), lambda e: e.campaign_failed(0, 0.5)],
    "kept_alive": [lambda e: e.kept_alive(0.4, 0.5)],
    "lease_lost": [lambda e: e.lease_lost(0.5)],
    "store_unreachable": [lambda e: e.store_unreachable(0.5)],
    "key_deleted": [lambda e: e.key_deleted(9, 0.5), lambda e: e.key_deleted(2, 0.5)],
    "holder_changed": [lambda e: e.holder_changed("other", 9, 0.5),
                       lambda e: e.holder_changed("other", 4, 0.5)],
    "role_granted": [lambda e: e.role_granted(SwitchRole.MASTER, 5, 0.5),
                     lambda e: e.role_granted(SwitchRole.MASTER, 4, 0.5),
                     lambda e: e.role_granted(SwitchRole.SLAVE, 5, 0.5)],
    "role_refused": [lambda e: e.role_refused(SwitchRole.MASTER, 5, 0.5),
                     lambda e: e.role_refused(SwitchRole.SLAVE, 5, 0.5)],
}


def every_move() -> Iterator[tuple[str, State, State]]:
    for name, variants in INPUTS.items():
        for state in State:
            for store_ok in (True, False):
                if not store_ok and state is not State.ELECTED:
                    continue
                for run in variants:
                    e = reach(state, store_ok)
                    run(e)
                    yield name, state, e.state


def test_every_input_is_in_the_table() -> None:
    public = {n for n in vars(Election) if not n.startswith("_") and callable(
        getattr(Election, n))} - {"is_master", "may_set_up_calls"}
    assert set(Election.MOVES) == public == set(INPUTS)


def test_every_state_change_is_one_its_input_declares() -> None:
    wrong = [(n, a, b) for n, a, b in every_move() if a is not b
             and (a, b) not in Election.MOVES[n]]
    assert wrong == []


def test_every_declared_move_happens() -> None:
    seen: dict[str, set[tuple[State, State]]] = {name: set() for name in Election.MOVES}
    for name, before, after in every_move():
        if before is not after:
            seen[name].add((before, after))
    assert seen == {name: set(moves) for name, moves in Election.MOVES.items()}


def test_a_master_with_the_store_cut_off_before_the_switch_granted_it_stops_new_calls(
) -> None:
    e = reach(State.ELECTED, store_ok=False)
    assert e.role_granted(SwitchRole.MASTER, 5, 0.1) == [Restore(), StopNewCalls()]
    assert e.state is State.MASTER_CUT_OFF
    assert e.kept_alive(0.2, 0.3) == [ResumeNewCalls()]
    assert e.may_set_up_calls(0.3)


def test_the_keepalive_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError):
        Election("a", lease_seconds=1.0, keepalive_seconds=1.0)


# Any interleaving.

STEP = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([0.05, 0.3, 1.0, 2.5])),
    st.tuples(st.just("tick"), st.integers(0, 2)),
    st.tuples(st.just("store"), st.integers(0, 2)),
    st.tuples(st.just("switch"), st.integers(0, 2)),
    st.tuples(st.just("kill"), st.integers(0, 2)),
    st.tuples(st.just("start"), st.integers(0, 2)),
    st.tuples(st.just("cut"), st.integers(0, 2)),
    st.tuples(st.just("heal"), st.integers(0, 2)),
    st.tuples(st.just("disconnect"), st.integers(0, 2)),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, max_size=120))
def test_at_most_one_master_under_any_interleaving(steps: list[tuple[str, Any]]) -> None:
    lab = Lab(3)
    for kind, arg in steps:
        ctl = lab.controllers.get(arg) if isinstance(arg, int) else None
        if kind == "advance":
            lab.advance(arg)
        elif kind == "start" and ctl is None:
            lab.start(arg)
        elif ctl is None:
            pass
        elif kind == "tick":
            lab.tick(ctl)
        elif kind in ("store", "switch"):
            lab.deliver(ctl, getattr(ctl, f"{kind}_queue"))
        elif kind == "kill":
            lab.kill(arg)
        elif kind in ("cut", "heal"):
            ctl.cut_off = kind == "cut"
        elif kind == "disconnect":
            ctl.switch_queue.clear()
            lab.switch.roles[ctl.name] = SwitchRole.EQUAL
            lab.act(ctl, ctl.election.switch_disconnected(lab.now))
            lab.act(ctl, ctl.election.switch_connected(lab.now))
        lab.check()
    for ctl in lab.controllers.values():
        ctl.cut_off = False
    if not lab.controllers:
        lab.start(0)
    lab.run(LEASE_SECONDS + 2 * KEEPALIVE_SECONDS + 0.5)
    lab.check()
    masters = lab.masters()
    assert len(masters) == 1
    assert lab.switch.master() == masters[0].name
