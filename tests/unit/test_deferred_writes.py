"""Writes while the master is cut off from etcd (``ryu_apps.effects``): deferred in
order, written first when etcd answers, nothing lost when it does not; a failed write
handed to the fail-stop."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from alg.config import AlgConfig
from alg.engine import Gateway
from alg.errors import StoreError
from alg.snapshot import Change, Forget, SessionRecord, Snapshot
from ryu_apps.effects import AppCounters, Effects
from ryu_apps.recovery import recover

A, B, S = (IPv4Address(a) for a in ("192.168.1.1", "203.0.113.2", "203.0.113.1"))


class FakeStore:
    path = "etcd http://127.0.0.1:2379"
    loaded_from = "etcd"

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self.up = True
        self.writes = self.records_written = 0
        self.batches: list[list[Change]] = []

    def write(self, changes: Any) -> None:
        if not self.up:
            raise StoreError("no member answered")
        self.batches.append(list(changes))
        self.snapshot.apply(list(changes))

    def load(self) -> Snapshot:
        return self.snapshot

    def clear(self) -> None:
        self.snapshot = Snapshot()

    def close(self) -> None:
        pass


def session(n: int) -> SessionRecord:
    return SessionRecord(n, 6, A, 40000 + n, B, 40000 + n, S, 1723)


def effects(store: FakeStore) -> Effects:
    return Effects(None, None, None, None, None, None, store, AppCounters(),  # type: ignore[arg-type]
                   lambda: 0.0)


def test_deferred_changes_are_written_in_order_when_the_store_answers() -> None:
    store = FakeStore()
    fx = effects(store)
    fx.defer_writes()
    fx.write([session(1)])
    fx.write([session(2), Forget("session", 1)])
    assert store.batches == [] and fx.counters.store_writes_deferred == 2
    assert fx.write_deferred() and fx.deferred is None
    assert store.batches == [[session(1), session(2), Forget("session", 1)]]
    assert [s.id for s in store.snapshot.sessions] == [2]
    fx.write([session(3)])
    assert store.batches[-1] == [session(3)]


def test_deferred_changes_the_store_refuses_are_kept_and_still_deferred() -> None:
    store = FakeStore()
    fx = effects(store)
    fx.defer_writes()
    fx.write([session(1)])
    store.up = False
    assert not fx.write_deferred()
    fx.write([session(2)])
    assert fx.deferred == [session(1), session(2)] and fx.counters.store_errors == 1
    store.up = True
    assert fx.write_deferred()
    assert [s.id for s in store.snapshot.sessions] == [1, 2]


def test_a_failed_write_goes_to_the_fail_stop_before_anything_else() -> None:
    store = FakeStore()
    fx = effects(store)
    failed: list[StoreError] = []
    fx.write_failed = failed.append
    store.up = False
    fx.write([session(1)])
    assert len(failed) == 1 and fx.counters.store_errors == 1 and fx.counters.store_writes == 0


def test_a_write_is_timed() -> None:
    store = FakeStore()
    fx = effects(store)
    ticks = iter([1.0, 1.004])
    fx.timer = lambda: next(ticks)
    fx.write([session(1)])
    assert fx.store_write_seconds.count == 1
    assert fx.store_write_seconds.sum == pytest.approx(0.004)


class UnreadableStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.snapshot.apply([session(1)])
        self.cleared = False

    def load(self) -> Snapshot:
        raise StoreError("etcd: no member answered within 2.0 s")

    def clear(self) -> None:
        self.cleared = True


def test_records_etcd_cannot_give_at_promotion_are_never_removed() -> None:
    """A state file that cannot be read is started afresh; etcd's records are the other
    controllers' too: the promoted controller ends instead, and they stay."""
    store = UnreadableStore()
    fx = effects(store)
    failed: list[StoreError] = []
    fx.write_failed = failed.append
    recover(Gateway(AlgConfig(public_ips=(B,))), fx, {}, False, 0.0)
    assert len(failed) == 1 and not store.cleared
    alone = effects(UnreadableStore())
    alone.store_unreadable(StoreError("corrupt"))
    assert alone.store is not None and alone.store.cleared  # type: ignore[attr-defined]
