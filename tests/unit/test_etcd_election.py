"""The election key's requests (``ryu_apps.etcd_election``) against a real three-member
etcd cluster on loopback; they skip where the ``etcd`` binary is not installed."""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from itertools import count

import pytest

from alg.snapshot import SessionRecord
from ryu_apps.etcd_election import ElectionKey, Holder, election_key
from ryu_apps.etcd_store import EtcdStore, StoreFencedError
from topo.etcd_cluster import Cluster, etcd_binary

needs_etcd = pytest.mark.skipif(etcd_binary() is None,
                                reason="no etcd binary (Debian's etcd-server)")
_names = count()
A, B, S = (IPv4Address(a) for a in ("192.168.1.1", "203.0.113.2", "203.0.113.1"))


def keys(cluster: Cluster, *names: str) -> list[ElectionKey]:
    gateway = f"gw{next(_names)}"
    return [ElectionKey(EtcdStore(cluster.endpoints, "test", gateway), "test", gateway, name)
            for name in names]


def test_the_key_lies_beside_the_gateways_records() -> None:
    assert election_key("edge", "g2") == "/pptp-alg/edge/g2/master"


@needs_etcd
def test_one_campaign_wins_the_other_learns_the_holder_and_its_generation(
        cluster: Cluster) -> None:
    one, two = keys(cluster, "c1", "c2")
    won, holder = one.campaign(3)
    assert won and holder is not None and holder.name == "c1"
    lost, seen = two.campaign(3)
    assert not lost and seen == holder and two.lease == 0
    assert two.observe().holder == holder
    assert one.keep_alive() and not two.keep_alive()


@needs_etcd
def test_a_resigned_key_is_gone_and_the_next_holder_has_a_higher_generation(
        cluster: Cluster) -> None:
    one, two = keys(cluster, "c1", "c2")
    _, first = one.campaign(3)
    assert first is not None
    one.resign(first.generation)
    gone = one.observe()
    assert gone.holder is None and gone.revision > first.generation
    won, second = two.campaign(3)
    assert won and second is not None and second.generation > first.generation


@needs_etcd
def test_resigning_an_older_generation_leaves_the_new_holders_key(cluster: Cluster) -> None:
    one, two = keys(cluster, "c1", "c2")
    _, first = one.campaign(3)
    assert first is not None
    one.resign(first.generation)
    _, second = two.campaign(3)
    one.resign(first.generation)
    assert two.observe().holder == second


@needs_etcd
def test_a_lease_not_kept_alive_expires_and_fences_its_writes(cluster: Cluster) -> None:
    one, two = keys(cluster, "c1", "c2")
    _, holder = one.campaign(2)
    assert holder is not None
    store = EtcdStore(cluster.endpoints, "test", one.key.split("/")[3],
                      guard=lambda: one.guard(holder.generation))
    store.write([SessionRecord(1, 6, A, 40000, B, 40000, S, 1723)])
    deadline = time.monotonic() + 10
    while one.observe().holder is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert one.observe().holder is None and not one.keep_alive()
    won, new = two.campaign(3)
    assert won and new == Holder("c2", new.generation)
    with pytest.raises(StoreFencedError):
        store.write([SessionRecord(2, 6, A, 40001, B, 40001, S, 1723)])
    assert len(store.load().sessions) == 1
    store.close()
