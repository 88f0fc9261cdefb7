"""The store on etcd (``ryu_apps.etcd_store``): the same records back as the SQLite store
for the same changes, one transaction per write, idempotent, guarded by the writer's
lease or election revision, and failing over between members within a bounded time.

The tests marked with a cluster run a real three-member etcd cluster on loopback
(``topo/etcd_cluster.py``); they skip where the ``etcd`` binary is not installed.
"""

from __future__ import annotations

import base64
import socket
import time
from ipaddress import IPv4Address
from itertools import count
from pathlib import Path
from typing import Any

import etcd3gw
import pytest

from alg.errors import StoreError
from alg.snapshot import (
    CallRecord,
    Change,
    ConnectionRecord,
    Forget,
    HeldRecord,
    HostRecord,
    PlainGreRecord,
    Record,
    SessionRecord,
    Snapshot,
    record_key,
)
from ryu_apps import etcd_store
from ryu_apps.etcd_store import (
    EtcdStore,
    Guard,
    StoreFencedError,
    StoreUnreachableError,
    decode,
    encode,
    parse_endpoint,
    plan,
    record_path,
    records_prefix,
)
from ryu_apps.store import Store
from topo.etcd_cluster import Cluster, etcd_binary, etcd_cluster, free_port

A, A2 = IPv4Address("192.168.1.1"), IPv4Address("192.168.1.2")
B, S = IPv4Address("203.0.113.2"), IPv4Address("203.0.113.1")
SESSION = SessionRecord(1, 6, A, 40000, B, 40000, S, 1723)
SESSION2 = SessionRecord(10, 6, A2, 40001, B, 40001, S, 1723)
UDP = SessionRecord(2, 17, A, 5000, B, 5000, S, 53)
CONNECTION = ConnectionRecord(1, 1000, 900000, 1200, 900300)
CONNECTION2 = ConnectionRecord(10, 7, None, 8, None)
CALL = CallRecord(3, 1, True, "established", 5, 5, 900, 1, 0.0, 4, 5)
CALL2 = CallRecord(4, 1, False, "wait_reply", None, 6, None, None, 0.5)
CALL3 = CallRecord(11, 10, True, "closed", 9, 9, 901, 2, 60.25, None, None)
HELD = HeldRecord(B, S, 7, 123.5)
HELD_HOST = HeldRecord(B, S, 8, 124.0, A)
PLAIN = PlainGreRecord(A, S, B, 8, 9, 1)
HOST = HostRecord(12, A2, B, 3)
EVERY_KIND: list[Record] = [SESSION, SESSION2, UDP, CONNECTION, CONNECTION2, CALL, CALL2,
                            CALL3, HELD, HELD_HOST, PLAIN, HOST]
BATCHES: list[list[Change]] = [
    list(EVERY_KIND),
    [CallRecord(3, 1, True, "closed", 5, 5, 900, 1, 30.0, 4, 5), Forget("call", 4)],
    [Forget("held", (B, S, 7)), Forget("plain", (A, S)), Forget("host", A2)],
    [Forget("connection", 10)],
    [Forget("session", 1)],
    [PLAIN, HeldRecord(B, S, 7, 200.0)],
]
needs_etcd = pytest.mark.skipif(etcd_binary() is None,
                                reason="no etcd binary (Debian's etcd-server)")
_names = count()


def canonical(snapshot: Snapshot) -> Snapshot:
    """``snapshot`` with each list in one order (SQLite gives rows in rowid order, etcd
    keys in key order)."""
    def order(records: list[Any]) -> list[Any]:
        return sorted(records, key=lambda r: repr(record_key(r)))
    return Snapshot(order(snapshot.sessions), order(snapshot.connections),
                    order(snapshot.calls), order(snapshot.held), order(snapshot.plain),
                    order(snapshot.hosts), list(snapshot.rejected))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# Without etcd.

@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda r: type(r).__name__)
def test_a_value_reads_back_as_its_record(record: Record) -> None:
    assert decode(record_path(record), encode(record).encode()) == record


@pytest.mark.parametrize(("path", "value", "says"), [
    ("session/1", b"{", "not JSON"),
    ("session/1", b'{"id": 1}', "not a JSON array"),
    ("session/1", b'[1, 6, "192.168.1.1", 70000, "203.0.113.2", 1, "203.0.113.1", 1]',
     "inside_port"),
    ("session/2", encode(SESSION).encode(), "the record of 'session/1'"),
    ("calls/1", encode(SESSION).encode(), "no table"),
    ("call/2/3", encode(CALL).encode(), "the record of 'call/1/3'"),
])
def test_a_bad_value_is_refused_with_its_reason(path: str, value: bytes, says: str) -> None:
    with pytest.raises(StoreError, match=says):
        decode(path, value)


def test_a_key_is_put_or_deleted_once_in_a_transaction() -> None:
    txn = plan([CALL, CONNECTION, SESSION, Forget("session", 1)], {})
    assert txn.ops == {"session/1": None, "connection/1": None}
    assert set(txn.ranges) == {"call/1/"} and txn.calls == {}
    txn = plan([Forget("session", 1), CALL], {3: 1, 4: 1, 11: 10})
    assert txn.ranges == {}
    assert txn.ops == {"session/1": None, "connection/1": None, "call/1/4": None,
                       "call/1/3": encode(CALL)}
    assert txn.calls == {3: 1, 11: 10}
    moved = CallRecord(3, 10, True, "established", 5, 5, 900, 1, 0.0, 4, 5)
    assert plan([moved], {3: 1}).ops == {"call/1/3": None, "call/10/3": encode(moved)}
    assert plan([Forget("call", 3)], {}).ops == {}


def test_a_record_out_of_range_refuses_the_whole_write() -> None:
    with pytest.raises(StoreError, match="SessionRecord: inside_port"):
        plan([SESSION, SessionRecord(5, 6, A, 70000, B, 1, S, 1)], {})
    with pytest.raises(StoreError, match="cannot write"):
        plan(["session"], {})  # type: ignore[list-item]


def test_names_and_endpoints_are_checked() -> None:
    assert records_prefix("c", "gw1") == "/pptp-alg/c/gw1/records/"
    with pytest.raises(ValueError, match="without '/'"):
        records_prefix("c", "a/b")
    assert parse_endpoint("127.0.0.1:2379") == ("http", "127.0.0.1", 2379)
    assert parse_endpoint("https://etcd.example:2379/") == ("https", "etcd.example", 2379)
    for bad in ("127.0.0.1", "ftp://h:1", "http://h:1/v3"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)
    with pytest.raises(ValueError, match="no etcd endpoint"):
        EtcdStore([], "c", "g")
    with pytest.raises(ValueError, match="a lease or a revision"):
        Guard("/k").compares()


def test_a_store_whose_members_are_all_down_fails_within_its_deadline() -> None:
    refusing = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = f"http://127.0.0.1:{silent.getsockname()[1]}"
        for endpoints in (refusing, [mute, *refusing]):
            store = EtcdStore(endpoints, "c", "g", request_timeout=0.3, deadline=0.8)
            started = time.monotonic()
            with pytest.raises(StoreUnreachableError, match=r"no member answered within 0\.8 s"):
                store.write([SESSION])
            with pytest.raises(StoreUnreachableError):
                store.load()
            assert time.monotonic() - started < 2 * (0.8 + 0.3)
            store.close()


def test_a_guard_that_holds_nothing_refuses_the_write_before_sending() -> None:
    store = EtcdStore([f"http://127.0.0.1:{free_port()}"], "c", "g", guard=lambda: None,
                      deadline=0.2)
    with pytest.raises(StoreFencedError, match="no guard held"):
        store.write([SESSION])
    store.close()


# With a real cluster.

@pytest.fixture
def client(cluster: Cluster) -> etcd3gw.Etcd3Client:
    host, port = cluster.endpoints[0].removeprefix("http://").split(":")
    return etcd3gw.client(host=host, port=int(port), api_path="/v3/", timeout=5.0)


def new_store(cluster: Cluster, **kwargs: Any) -> EtcdStore:
    return EtcdStore(cluster.endpoints, "test", f"gw{next(_names)}", **kwargs)


def revision(client: etcd3gw.Etcd3Client) -> int:
    return int(client.status()["header"]["revision"])


@needs_etcd
def test_every_kind_and_forget_come_back_as_from_sqlite(cluster: Cluster,
                                                        tmp_path: Path) -> None:
    store, sqlite = new_store(cluster), Store(tmp_path / "s.sqlite")
    for changes in BATCHES:
        store.write(changes)
        sqlite.write(changes)
        assert canonical(store.load()) == canonical(sqlite.load())
    assert len(store.load()) > 0
    fresh = EtcdStore(cluster.endpoints, "test", store.prefix.split("/")[3])
    assert canonical(fresh.load()) == canonical(sqlite.load())
    assert store.writes == len(BATCHES)
    assert store.records_written == sum(len(c) for c in BATCHES)
    store.clear()
    assert len(store.load()) == 0
    store.close()
    fresh.close()
    sqlite.close()


@needs_etcd
def test_a_write_is_one_transaction_all_or_nothing(cluster: Cluster,
                                                   client: etcd3gw.Etcd3Client) -> None:
    store = new_store(cluster)
    before = revision(client)
    store.write(EVERY_KIND)
    assert revision(client) == before + 1
    with pytest.raises(StoreError, match="inside_port"):
        store.write([Forget("session", 2), SessionRecord(5, 6, A, 70000, B, 1, S, 1)])
    assert revision(client) == before + 1
    assert canonical(store.load()) == canonical(Snapshot(*_lists(EVERY_KIND)))
    store.close()


@needs_etcd
def test_the_same_changes_twice_leave_the_same_records(cluster: Cluster) -> None:
    store = new_store(cluster)
    for changes in BATCHES:
        store.write(changes)
        once = canonical(store.load())
        store.write(changes)
        assert canonical(store.load()) == once
    store.close()


@needs_etcd
def test_a_write_after_the_lease_is_lost_is_fenced_and_writes_nothing(
        cluster: Cluster, client: etcd3gw.Etcd3Client) -> None:
    lease = client.lease(30)
    key = f"/pptp-alg/test/leader{next(_names)}"
    client.put(key, "me", lease=lease)
    store = new_store(cluster, guard=lambda: Guard(key, lease=lease.id))
    store.write([SESSION, CONNECTION])
    lease.revoke()
    before = revision(client)
    with pytest.raises(StoreFencedError, match="no longer holds, nothing written"):
        store.write([Forget("session", 1), UDP])
    with pytest.raises(StoreFencedError):
        store.clear()
    assert revision(client) == before
    assert canonical(store.load()) == Snapshot([SESSION], [CONNECTION])
    assert store.writes == 1
    store.close()


@needs_etcd
def test_a_write_after_another_election_is_fenced(cluster: Cluster,
                                                  client: etcd3gw.Etcd3Client) -> None:
    key = f"/pptp-alg/test/leader{next(_names)}"
    client.put(key, "me")
    [(_, meta)] = client.get(key, metadata=True)
    held = Guard(key, create_revision=int(meta["create_revision"]),
                 mod_revision=int(meta["mod_revision"]))
    store = new_store(cluster, guard=lambda: held)
    store.write([SESSION])
    client.delete(key)
    client.put(key, "another")
    with pytest.raises(StoreFencedError):
        store.write([UDP])
    assert store.load() == Snapshot([SESSION])
    store.close()


@needs_etcd
def test_bad_values_are_left_out_counted_and_removed(cluster: Cluster,
                                                     client: etcd3gw.Etcd3Client) -> None:
    store = new_store(cluster)
    store.write([SESSION, CALL])
    client.put(store.prefix + "session/7", "[7, 6]")
    client.put(store.prefix + "call/1/9", "not json")
    client.put(store.prefix + "other", "[]")
    loaded = store.load()
    assert canonical(loaded) == Snapshot([SESSION], calls=[CALL], rejected=[
        "call/1/9: not JSON: Expecting value: line 1 column 1 (char 0)",
        "other: no table 'other'",
        "session/7: 2 values, not 8"])
    assert store.load() == Snapshot([SESSION], calls=[CALL])
    store.close()


@needs_etcd
def test_a_load_reads_every_page(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_store, "PAGE", 2)
    store = new_store(cluster)
    store.write(EVERY_KIND)
    assert canonical(store.load()) == canonical(Snapshot(*_lists(EVERY_KIND)))
    store.close()


@needs_etcd
def test_writes_go_on_through_the_others_when_a_member_stops() -> None:
    with etcd_cluster(3) as own:
        store = EtcdStore(own.endpoints, "test", "failover")
        store.write([SESSION])
        own.members[0].stop()
        started = time.monotonic()
        store.write([CONNECTION, CALL])
        store.write([UDP])
        assert time.monotonic() - started < etcd_store.DEADLINE
        assert store.failovers >= 1
        assert canonical(store.load()) == Snapshot([SESSION, UDP], [CONNECTION], [CALL])
        store.close()


def _lists(records: list[Record]) -> list[list[Any]]:
    tables = ("session", "connection", "call", "held", "plain", "host")
    return [[r for r in records if record_key(r)[0] == t] for t in tables]


@needs_etcd
def test_the_store_cost_bench_reports_the_etcd_store(
        cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import store_cost

    argv = ["--calls", "5", "--rounds", "1", "--dir", str(tmp_path),
            "--etcd", ",".join(cluster.endpoints)]
    assert store_cost.main(argv) == 0
    assert "| core + etcd store (3 members) |" in capsys.readouterr().out
    host, port = cluster.endpoints[1].removeprefix("http://").split(":")
    client = etcd3gw.client(host=host, port=int(port), api_path="/v3/", timeout=5.0)
    assert client.get("/pptp-alg/bench/", range_end="/pptp-alg/bench0") == []


@needs_etcd
def test_an_event_beyond_the_clusters_operations_per_transaction_is_written_whole(
        cluster: Cluster) -> None:
    """etcd refuses a transaction of more than ``--max-txn-ops`` (128) operations; an
    expiry that ends 300 sessions at once is still written, in several."""
    store = new_store(cluster)
    sessions = [SessionRecord(i, 17, A, 1000 + i, B, 1000 + i, S, 53) for i in range(1, 301)]
    store.write(sessions)
    assert len(store.load().sessions) == 300
    store.write([Forget("session", i) for i in range(1, 301)])
    assert len(store.load()) == 0
    store.close()
