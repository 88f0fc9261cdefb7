"""The warm copy of a gateway's records (``ryu_apps.warm_copy``): a watch's stream
parsed however it is cut, and against a real three-member etcd cluster the copy
following writes and removals, taken at promotion instead of a read, read again after a
compaction, and going on through another member when one stops."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from itertools import count

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alg.snapshot import CallRecord, ConnectionRecord, Forget, SessionRecord
from ryu_apps.etcd_election import ElectionKey
from ryu_apps.etcd_store import EtcdStore
from ryu_apps.warm_copy import WarmCopy, json_objects
from topo.etcd_cluster import Cluster, etcd_binary, etcd_cluster

needs_etcd = pytest.mark.skipif(etcd_binary() is None,
                                reason="no etcd binary (Debian's etcd-server)")
_names = count()
A, B, S = (IPv4Address(a) for a in ("192.168.1.1", "203.0.113.2", "203.0.113.1"))
OBJECTS = [{"result": {"header": {"revision": "7"}, "created": True}},
           {"result": {"events": [{"kv": {"key": "a2V5", "mod_revision": "8"}}]}},
           {"result": {"header": {"revision": "9"}}}]


@given(st.lists(st.integers(0, 400), max_size=6))
def test_a_stream_of_json_objects_is_parsed_however_it_is_cut(cuts: list[int]) -> None:
    text = ("\n".join(json.dumps(o) for o in OBJECTS) + "\n").encode()
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert list(json_objects(chunks)) == OBJECTS


def session(n: int) -> SessionRecord:
    return SessionRecord(n, 6, A, 40000 + n, B, 40000 + n, S, 1723)


def following(copy: WarmCopy) -> Callable[[], None]:
    """Follow in a thread; the returned function stops it."""
    done = threading.Event()
    thread = threading.Thread(target=copy.follow, args=(done.is_set,), daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        copy._session.close()  # ends a stream waiting for its next response
        thread.join(timeout=40)

    return stop


def wait(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def same(copy: WarmCopy, store: EtcdStore) -> bool:
    return copy.items() == sorted(store.read()[0])


@needs_etcd
def test_the_copy_follows_writes_and_removals(cluster: Cluster) -> None:
    store = EtcdStore(cluster.endpoints, "test", f"gw{next(_names)}")
    store.write([session(1)])
    copy = WarmCopy(store, read_timeout=2.0)
    stop = following(copy)
    try:
        wait(lambda: copy.revision > 0, "the first read")
        store.write([session(2), ConnectionRecord(2, 1, None, 2, None),
                     CallRecord(5, 2, True, "requested", 9, 9, None, 1, 0.0, None, None)])
        store.write([Forget("session", 1)])
        wait(lambda: same(copy, store), "the copy to follow")
        store.write([Forget("session", 2)])  # its connection and calls go with it
        wait(lambda: same(copy, store) and copy.items() == [], "the removals")
        assert copy.reads == 1
    finally:
        stop()
        store.close()


@needs_etcd
def test_a_promoted_controller_loads_the_copy_once_it_reached_its_generation(
        cluster: Cluster) -> None:
    gateway = f"gw{next(_names)}"
    writer = EtcdStore(cluster.endpoints, "test", gateway)
    writer.write([session(1), session(2)])
    standby = EtcdStore(cluster.endpoints, "test", gateway)
    copy = WarmCopy(standby, read_timeout=2.0)
    standby.warm = copy
    key = ElectionKey(EtcdStore(cluster.endpoints, "test", gateway), "test", gateway, "c2")
    stop = following(copy)
    try:
        wait(lambda: copy.revision > 0, "the first read")
        writer.write([Forget("session", 1), session(3)])
        won, holder = key.campaign(5)
        assert won and holder is not None
        standby.guard = lambda: key.guard(holder.generation)
        snapshot = standby.load()
        assert standby.loaded_from == "warm copy"
        assert sorted(s.id for s in snapshot.sessions) == [2, 3]
        assert copy.revision >= holder.generation
        # Master from now on: the copy follows no more, not even what it writes.
        assert standby.warm is None
        writer.write([session(4)])
        time.sleep(1.0)
        assert not any(key.endswith("session/4") for key, _ in copy.items())
    finally:
        stop()
        for each in (writer, standby, key.store):
            each.close()


@needs_etcd
def test_a_copy_behind_its_generation_is_not_taken(cluster: Cluster) -> None:
    gateway = f"gw{next(_names)}"
    store = EtcdStore(cluster.endpoints, "test", gateway)
    store.write([session(1)])
    copy = WarmCopy(store)
    copy.read()
    store.warm = copy
    key = ElectionKey(EtcdStore(cluster.endpoints, "test", gateway), "test", gateway, "c1")
    won, holder = key.campaign(5)
    assert won and holder is not None
    store.write([session(2)])  # not followed: the copy stays at its read
    store.guard = lambda: key.guard(holder.generation)
    assert sorted(s.id for s in store.load().sessions) == [1, 2]
    assert store.loaded_from == "etcd"
    store.close()
    key.store.close()


@needs_etcd
def test_a_compacted_revision_is_read_again_whole(cluster: Cluster) -> None:
    store = EtcdStore(cluster.endpoints, "test", f"gw{next(_names)}")
    store.write([session(1)])
    copy = WarmCopy(store, read_timeout=2.0)
    copy.read()
    store.write([session(2)])
    store.write([session(3)])
    latest = store.read()[1]
    store.post("kv/compaction", {"revision": str(latest), "physical": True})
    stop = following(copy)  # from a revision compacted away
    try:
        wait(lambda: copy.reads == 2 and same(copy, store), "the copy read again")
    finally:
        stop()
        store.close()


@needs_etcd
def test_the_copy_goes_on_through_another_member_when_one_stops() -> None:
    with etcd_cluster(3) as own:
        store = EtcdStore(own.endpoints, "test", "gw")
        copy = WarmCopy(store, read_timeout=2.0)
        stop = following(copy)
        try:
            store.write([session(1)])
            wait(lambda: same(copy, store), "the copy")
            own.members[0].stop()
            store.write([session(2)])
            wait(lambda: same(copy, store), "the copy through another member", 20)
        finally:
            stop()
            store.close()
