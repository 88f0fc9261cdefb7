"""The election carried out (``ryu_apps.mastership``): a fake election key and a fake
gateway, a fake clock. What reaches the switch, when the gateway takes it over, what a
cut from etcd and a demotion do. (The key's requests against a real etcd cluster are in
``test_etcd_election.py``; the election's logic in ``test_election.py``.)"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from alg.election import Election, SwitchRole
from alg.errors import StoreError
from ryu_apps import wire
from ryu_apps.effects import AppCounters
from ryu_apps.etcd_election import Holder, Observation
from ryu_apps.etcd_store import Guard, StoreUnreachableError
from ryu_apps.mastership import DEMOTED_EXIT, Mastership


class EndedError(Exception):
    """The fake fail-stop."""


@dataclass
class FakeKey:
    """The election key as a dict-like etcd of one key, and a switch for the lease."""

    controller_id: str = "c1"
    holder: Holder | None = None
    revision: int = 1
    lease: int = 0
    reachable: bool = True
    alive: bool = True
    requests: list[str] = field(default_factory=list)

    def _ask(self, what: str) -> None:
        self.requests.append(what)
        if not self.reachable:
            raise StoreUnreachableError("no member answered")

    def campaign(self, lease_seconds: float) -> tuple[bool, Holder | None]:
        self._ask("campaign")
        if self.holder is None:
            self.revision += 1
            self.holder = Holder(self.controller_id, self.revision)
            self.lease = 77
            return True, self.holder
        return False, self.holder

    def keep_alive(self) -> bool:
        self._ask("keep_alive")
        return self.alive

    def resign(self, generation: int) -> None:
        self._ask("resign")
        if self.holder is not None and self.holder.generation == generation:
            self.holder = None
            self.revision += 1
        self.lease = 0

    def observe(self) -> Observation:
        self._ask("observe")
        return Observation(self.holder, self.revision)

    def guard(self, generation: int) -> Guard | None:
        return Guard("k", lease=self.lease, create_revision=generation) if self.lease else None


@dataclass
class FakeGateway:
    name: str = "default"
    roles: list[tuple[int, int]] = field(default_factory=list)
    taken_over: int = 0
    stopped: int = 0
    resumed: int = 0
    store_takes_deferred: bool = True

    def send_roles(self, messages: list[wire.Message]) -> None:
        self.roles.extend(wire.decode_role(wire.encode([m], wire.Xids())) for m in messages)

    def take_over(self) -> None:
        self.taken_over += 1

    def stop_new_calls(self) -> None:
        self.stopped += 1

    def resume_new_calls(self) -> bool:
        self.resumed += 1
        return self.store_takes_deferred


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def end(status: int, reason: str) -> None:
    raise EndedError(status, reason)


def reply(role: int, generation: int) -> bytes:
    buf = wire.encode([wire.role_request(role, generation)], wire.Xids())
    return buf[:1] + bytes([wire.OFPT_ROLE_REPLY]) + buf[2:]


def request(role: int, generation: int) -> bytes:
    return wire.encode([wire.role_request(role, generation)], wire.Xids())


@pytest.fixture
def clock() -> Clock:
    return Clock()


def mastership(clock: Clock, key: FakeKey | None = None) -> tuple[Mastership, FakeKey,
                                                                   FakeGateway]:
    key = key or FakeKey()
    unit = FakeGateway()
    return (Mastership(Election(key.controller_id), key, unit, clock, end, AppCounters()),
            key, unit)


def master(clock: Clock) -> tuple[Mastership, FakeKey, FakeGateway]:
    ship, key, unit = mastership(clock)
    ship.switch_connected()
    ship.tick()
    assert key.holder is not None
    ship.role_reply(reply(wire.OFPCR_ROLE_MASTER, key.holder.generation))
    assert ship.role == "master"
    return ship, key, unit


def test_a_connection_asks_for_slave_before_anything_else(clock: Clock) -> None:
    ship, key, unit = mastership(clock)
    ship.switch_connected()
    assert unit.roles == [(wire.OFPCR_ROLE_SLAVE, 0)]
    assert key.requests == ["observe"] and unit.taken_over == 0


def test_elected_it_asks_for_master_and_takes_the_switch_over_only_once_granted(
        clock: Clock) -> None:
    ship, key, unit = mastership(clock)
    ship.switch_connected()
    ship.tick()
    assert key.holder == Holder("c1", 2) and ship.role == "elected"
    assert unit.roles[-1] == (wire.OFPCR_ROLE_MASTER, 2)
    assert unit.taken_over == 0 and ship.guard() is None
    ship.role_reply(reply(wire.OFPCR_ROLE_MASTER, 2))
    assert unit.taken_over == 1 and ship.role == "master"
    assert ship.guard() == Guard("k", lease=77, create_revision=2)
    assert ship.lease_age(clock.now + 0.5) == pytest.approx(0.5)


def test_a_standby_asks_for_slave_with_the_holders_generation_read_first(
        clock: Clock) -> None:
    """The switch refuses a slave request below the generation it accepted as stale."""
    ship, key, unit = mastership(clock, FakeKey(holder=Holder("c2", 9), revision=9))
    ship.switch_connected()
    ship.tick()
    assert key.requests[0] == "observe"
    assert ship.role == "standby" and unit.roles == [(wire.OFPCR_ROLE_SLAVE, 9)]
    assert ship.lease_age(clock.now) is None and unit.taken_over == 0


def test_a_connection_etcd_does_not_answer_still_asks_for_slave(clock: Clock) -> None:
    ship, _key, unit = mastership(clock, FakeKey(reachable=False))
    ship.switch_connected()
    assert unit.roles == [(wire.OFPCR_ROLE_SLAVE, 0)]
    assert ship.counters.election_request_failures == 1


def test_a_deleted_key_is_campaigned_for_at_once(clock: Clock) -> None:
    ship, key, unit = mastership(clock, FakeKey(holder=Holder("c2", 9), revision=9))
    ship.switch_connected()
    ship.tick()
    key.holder, key.revision = None, 12  # the holder's lease expired in etcd
    clock.now += 0.25
    ship.tick()
    assert key.holder == Holder("c1", 13) and unit.roles[-1] == (wire.OFPCR_ROLE_MASTER, 13)


def test_cut_off_from_etcd_it_stops_new_calls_and_resumes_when_a_keep_alive_passes(
        clock: Clock) -> None:
    ship, key, unit = master(clock)
    key.reachable = False
    clock.now += 1.0
    ship.tick()
    assert ship.role == "master cut off" and unit.stopped == 1
    key.reachable = True
    clock.now += 1.0
    ship.tick()
    assert ship.role == "master" and unit.resumed == 1


def test_deferred_writes_the_store_does_not_take_keep_new_calls_stopped(clock: Clock) -> None:
    ship, key, unit = master(clock)
    key.reachable = False
    clock.now += 1.0
    ship.tick()
    key.reachable, unit.store_takes_deferred = True, False
    clock.now += 1.0
    ship.tick()
    assert unit.resumed == 1 and ship.role == "master cut off"


def test_a_master_cut_off_past_its_lease_ends_the_process(clock: Clock) -> None:
    ship, key, _unit = master(clock)
    key.reachable = False
    clock.now += 1.0
    ship.tick()
    clock.now += 2.5
    with pytest.raises(EndedError) as ended:
        ship.tick()
    assert ended.value.args[0] == DEMOTED_EXIT and "no longer master" in ended.value.args[1]


def test_a_master_whose_request_the_switch_finds_stale_ends_the_process(clock: Clock) -> None:
    ship, key, _unit = master(clock)
    assert key.holder is not None
    with pytest.raises(EndedError):
        ship.role_refused(request(wire.OFPCR_ROLE_MASTER, key.holder.generation))


def test_an_elected_controller_refused_as_stale_steps_down_without_ending(
        clock: Clock) -> None:
    ship, key, unit = mastership(clock)
    ship.switch_connected()
    ship.tick()
    ship.role_refused(request(wire.OFPCR_ROLE_MASTER, 2))
    assert ship.role == "standby" and unit.taken_over == 0 and key.holder is None


def test_a_lost_lease_demotes_a_master(clock: Clock) -> None:
    ship, key, _unit = master(clock)
    key.alive = False
    clock.now += 1.0
    with pytest.raises(EndedError):
        ship.tick()


def test_a_failed_write_ends_the_process(clock: Clock) -> None:
    ship, _key, _unit = master(clock)
    with pytest.raises(EndedError) as ended:
        ship.write_failed(StoreError("etcd: the transaction failed"))
    assert "nothing of the event was sent" in ended.value.args[1]


def test_a_short_role_message_changes_nothing(clock: Clock) -> None:
    ship, _key, unit = mastership(clock)
    ship.switch_connected()
    ship.tick()
    ship.role_reply(b"\x04\x19\x00\x08")
    ship.role_refused(b"")
    assert ship.role == "elected" and unit.taken_over == 0


def test_a_campaign_etcd_does_not_answer_is_counted_and_tried_again(clock: Clock) -> None:
    ship, key, _unit = mastership(clock, FakeKey(reachable=False))
    ship.switch_connected()
    ship.tick()
    assert ship.role == "standby" and ship.counters.election_request_failures >= 1
    key.reachable = True
    clock.now += 1.0
    ship.tick()
    assert ship.role == "elected"


def test_a_disconnected_switch_is_not_campaigned_for(clock: Clock) -> None:
    ship, key, _unit = mastership(clock)
    ship.tick()
    assert key.requests == [] and ship.role == "standby"


@pytest.mark.parametrize("role", [SwitchRole.SLAVE, SwitchRole.EQUAL])
def test_other_grants_take_nothing_over(clock: Clock, role: SwitchRole) -> None:
    ship, _key, unit = mastership(clock)
    ship.switch_connected()
    value = {SwitchRole.SLAVE: wire.OFPCR_ROLE_SLAVE, SwitchRole.EQUAL: wire.OFPCR_ROLE_EQUAL}
    ship.role_reply(reply(value[role], 0))
    assert unit.taken_over == 0 and ship.election.switch_role is role


def test_a_standby_stands_by_once_the_switch_made_it_slave(clock: Clock) -> None:
    ship, _key, _unit = mastership(clock, FakeKey(holder=Holder("c2", 9), revision=9))
    ship.switch_connected()
    assert not ship.standing_by
    ship.role_reply(reply(wire.OFPCR_ROLE_SLAVE, 0))
    assert ship.standing_by
    ship.switch_disconnected()
    assert not ship.standing_by


def test_a_master_does_not_read_the_key_each_tick(clock: Clock) -> None:
    """Cut from etcd, each read would wait out its deadline: a second more per tick
    before the next keep-alive, which could bring it back."""
    ship, key, _unit = master(clock)
    key.requests.clear()
    for _ in range(8):
        clock.now += 0.25
        ship.tick()
    assert "observe" not in key.requests and key.requests.count("keep_alive") == 2


def test_an_unusable_keep_alive_answer_cuts_off_and_is_counted(clock: Clock) -> None:
    """Only etcd saying the lease is gone demotes; an error is a cut, bounded by the
    lease's deadline."""
    ship, key, unit = master(clock)

    def broken() -> bool:
        raise StoreError("etcd: a keep-alive's answer: KeyError('TTL')")

    key.keep_alive = broken  # type: ignore[method-assign]
    clock.now += 1.0
    ship.tick()
    assert ship.role == "master cut off" and unit.stopped == 1
    assert ship.counters.election_request_failures == 1
