"""One switch's election key in etcd: the requests behind ``alg.election``'s actions.

The key is ``/pptp-alg/<cluster>/<gateway>/master`` (:func:`election_key`); its value
names the holder (a ``controller_id``), it is attached to the holder's lease, and its
create revision is the holder's generation. A campaign grants a lease, then creates the
key with it in a transaction that compares the key's create revision with 0 (the key is
absent), and reads the key in the same transaction when it is not; a lost campaign
revokes the lease it granted. Requests go through :meth:`EtcdStore.post
<ryu_apps.etcd_store.EtcdStore.post>`, which fails over between the cluster's members.
"""

from __future__ import annotations

import base64
import contextlib
import math
from dataclasses import dataclass
from typing import Any

from alg.errors import StoreError
from ryu_apps.etcd_store import EtcdStore, Guard, b64, records_prefix


def election_key(cluster: str, gateway: str) -> str:
    """The election key of a gateway's switch."""
    return records_prefix(cluster, gateway).removesuffix("records/") + "master"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds the key, and since which create revision (their generation)."""

    name: str
    generation: int


@dataclass(frozen=True, slots=True)
class Observation:
    """The key as read at ``revision``: its holder, None when it is absent."""

    holder: Holder | None
    revision: int


class ElectionKey:
    """The election key of one gateway, for one controller.

    Args:
        store: the requests' way to the cluster (an :class:`EtcdStore` of its own: its
            connections are not shared with the records' writes).
        cluster: the controllers' cluster name.
        gateway: the gateway's name.
        controller_id: this controller's name, the key's value while it holds it.
    """

    def __init__(self, store: EtcdStore, cluster: str, gateway: str,
                 controller_id: str) -> None:
        self.store = store
        self.key = election_key(cluster, gateway)
        self.controller_id = controller_id
        self.lease = 0
        """The lease this controller's key is attached to (0: none)."""

    def campaign(self, lease_seconds: float) -> tuple[bool, Holder | None]:
        """Create the key with a new lease unless it exists: (won, holder). A lost
        campaign's holder is None when the key went between the two requests.

        Raises:
            StoreError: the cluster did not answer, or answered something else.
        """
        granted = self.store.post("lease/grant", {"TTL": str(math.ceil(lease_seconds))})
        lease = _int(granted, "ID")
        key = b64(self.key)
        answer = self.store.post("kv/txn", {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": b64(self.controller_id),
                                         "lease": str(lease)}}],
            "failure": [{"request_range": {"key": key}}],
        })
        if answer.get("succeeded", False):
            self.lease = lease
            return True, Holder(self.controller_id, _int(answer.get("header"), "revision"))
        with contextlib.suppress(StoreError):
            self._revoke(lease)
        try:
            kvs = answer["responses"][0]["response_range"].get("kvs", [])
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise StoreError(f"etcd {self.store.path}: a campaign's answer: {exc!r}") from exc
        return False, _holder(kvs[0]) if kvs else None

    def keep_alive(self) -> bool:
        """Keep this controller's lease alive: False when etcd says it is gone.

        Raises:
            StoreError: the cluster did not answer.
        """
        if not self.lease:
            return False
        answer = self.store.post("lease/keepalive", {"ID": str(self.lease)})
        result = answer.get("result", answer) if isinstance(answer, dict) else None
        try:
            return int((result or {}).get("TTL", 0)) > 0
        except (TypeError, ValueError) as exc:
            raise StoreError(f"etcd {self.store.path}: a keep-alive's answer: "
                             f"{exc!r}") from exc

    def resign(self, generation: int) -> None:
        """Delete the key if ``generation`` still made it, and revoke the lease.

        Raises:
            StoreError: the cluster did not answer (the lease then expires by itself).
        """
        lease, self.lease = self.lease, 0
        key = b64(self.key)
        if generation:
            self.store.post("kv/txn", {
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                             "create_revision": str(generation)}],
                "success": [{"request_delete_range": {"key": key}}], "failure": []})
        if lease:
            self._revoke(lease)

    def observe(self) -> Observation:
        """Read the key.

        Raises:
            StoreError: the cluster did not answer, or answered something else.
        """
        answer = self.store.post("kv/range", {"key": b64(self.key)})
        revision = _int(answer.get("header"), "revision")
        kvs = answer.get("kvs", [])
        return Observation(_holder(kvs[0]) if kvs else None, revision)

    def guard(self, generation: int) -> Guard | None:
        """What a write of the records must check: this controller still holds the key
        it made at ``generation`` with its lease (None: it holds nothing)."""
        if not self.lease or not generation:
            return None
        return Guard(self.key, lease=self.lease, create_revision=generation)

    def _revoke(self, lease: int) -> None:
        self.store.post("lease/revoke", {"ID": str(lease)})


def _int(part: Any, name: str) -> int:
    try:
        return int(part[name])
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"etcd: an answer without {name}: {exc!r}") from exc


def _holder(kv: Any) -> Holder:
    try:
        return Holder(base64.b64decode(kv.get("value", "")).decode(),
                      int(kv["create_revision"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"etcd: the election key's value: {exc!r}") from exc

