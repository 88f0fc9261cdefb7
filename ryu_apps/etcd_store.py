"""The core's records in etcd (v3 API through its JSON gateway, with ``etcd3gw``).

The same interface as :class:`ryu_apps.store.Store` (``load``, ``write``, ``clear``,
``close``), for controllers that share their records through an etcd cluster.

**Keys.** Every record of a gateway lies under ``/pptp-alg/<cluster>/<gateway>/records/``
(:func:`records_prefix`), one key per record: ``session/<id>``, ``connection/<session
id>``, ``call/<session id>/<index>``, ``held/<public ip>/<server ip>/<call id>``,
``plain/<client ip>/<server ip>``, ``host/<inside ip>``. A value is the record's JSON
array, its values in the records' field order (the SQLite store's row), read back through
:func:`alg.snapshot.parse_row`, so both stores take the same values.

**Writes.** :meth:`EtcdStore.write` validates every record (:func:`alg.snapshot.validated`)
and writes one event's changes as one etcd transaction of puts and deletes by key (the net
effect of the changes in their order: a key at most once, as etcd requires), so a write is
all or nothing and writing the same changes again changes nothing. An event of more than
``max_ops`` puts and deletes (etcd's ``--max-txn-ops``) is written as several
transactions of independent operations, each guarded: a failure between two leaves the
first written, and writing the event again completes it. A session's or
connection's removal deletes the range of its calls' keys. With a ``guard``, the
transaction compares the guard's election key with what the writer holds (its lease, its
create or mod revision) and does nothing when that no longer holds:
:class:`StoreFencedError`.

**Members.** The store sends each request to one member of ``endpoints`` at a time,
starting with the last that answered; a member that cannot be reached, does not answer
within ``request_timeout`` or answers 503 (no leader) makes it try the next, until one
answers or ``deadline`` seconds have passed since the call began: then
:class:`~alg.errors.StoreError`. Puts and deletes by key are idempotent, so a write that
timed out on one member is safe to send to the next.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from ipaddress import IPv4Address
from typing import Any, Protocol
from urllib.parse import urlsplit

import etcd3gw
from etcd3gw import exceptions as etcd_errors

from alg.errors import RecordError, StoreError
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
    Table,
    parse_row,
    record_key,
    validated,
)

ROOT = "/pptp-alg"
REQUEST_TIMEOUT = 1.0
"""Seconds one request may take on one member (to connect, and again to answer)."""
DEADLINE = 2.0
"""Seconds one call of the store may take over all members before it fails."""
PAGE = 1000
"""Keys per range request of :meth:`EtcdStore.load`."""
MAX_TXN_OPS = 128
"""Operations per transaction: etcd's ``--max-txn-ops`` default, which refuses more."""

_TABLES: tuple[Table, ...] = ("session", "connection", "call", "held", "plain", "host")


WARM_WAIT = 0.5
"""Seconds :meth:`EtcdStore.load` waits for its warm copy to reach the generation."""


class WarmSource(Protocol):
    """A copy of the records kept current (``ryu_apps.warm_copy.WarmCopy``)."""

    def current(self, revision: int, wait: float) -> bool:
        """Whether the copy reached ``revision``, waiting up to ``wait`` seconds."""

    def items(self) -> list[tuple[str, bytes]]:
        """The records' keys and values."""

    def stop(self) -> None:
        """Keep the copy no longer."""


class StoreFencedError(StoreError):
    """The writer no longer holds its guard (its lease expired, or another controller's
    election made the key anew): the transaction wrote nothing."""


class StoreUnreachableError(StoreError):
    """No member of the cluster answered within the deadline."""


@dataclass(frozen=True, slots=True)
class Guard:
    """What a guarded write checks in the same transaction: the election key ``key`` and,
    for each field that is not None, that the key has it now.

    Attributes:
        key: the election key (a missing key has lease 0 and revisions 0).
        lease: the lease the key must be attached to (the writer's).
        create_revision: the revision at which the key must have been made.
        mod_revision: the revision at which the key must have been last written.
    """

    key: str
    lease: int | None = None
    create_revision: int | None = None
    mod_revision: int | None = None

    def compares(self) -> list[dict[str, Any]]:
        """The transaction's compares (etcd's ``Compare`` messages in JSON)."""
        key = b64(self.key)
        out: list[dict[str, Any]] = []
        if self.lease is not None:
            out.append({"key": key, "target": "LEASE", "result": "EQUAL",
                        "lease": str(self.lease)})
        if self.create_revision is not None:
            out.append({"key": key, "target": "CREATE", "result": "EQUAL",
                        "create_revision": str(self.create_revision)})
        if self.mod_revision is not None:
            out.append({"key": key, "target": "MOD", "result": "EQUAL",
                        "mod_revision": str(self.mod_revision)})
        if not out:
            raise ValueError("a guard checks a lease or a revision")
        return out


def records_prefix(cluster: str, gateway: str) -> str:
    """The prefix of a gateway's records (ends with ``/``)."""
    for name in (cluster, gateway):
        if not name or "/" in name:
            raise ValueError(f"{name!r}: a name without '/' is needed")
    return f"{ROOT}/{cluster}/{gateway}/records/"


def parse_endpoint(endpoint: str) -> tuple[str, str, int]:
    """``(protocol, host, port)`` of ``http://host:port``, ``https://...`` or ``host:port``.

    Raises:
        ValueError: not such an address.
    """
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError(f"{endpoint!r} is not an etcd client URL (http://host:port)")
    if parts.path not in ("", "/"):
        raise ValueError(f"{endpoint!r}: an etcd client URL has no path")
    return parts.scheme, parts.hostname, parts.port


def b64(text: str) -> str:
    """``text`` as etcd's JSON gateway takes keys and values: UTF-8, base64."""
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix: str) -> str:
    """The end of the range of every key beginning with ``prefix``."""
    """The end of the key range of every key that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def record_path(record: Record) -> str:
    """The key of a record under its gateway's prefix."""
    match record:
        case CallRecord():
            return f"call/{record.session_id}/{record.index}"
        case _:
            table, key = record_key(record)
            return _forget_path(table, key)


def _forget_path(table: Table, key: object) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return "/".join((table, *(str(part) for part in parts)))


def record_row(record: Record) -> list[object]:
    """A record's values in field order, as JSON takes them (addresses as text)."""
    return [str(v) if isinstance(v, IPv4Address) else v
            for v in (getattr(record, f.name) for f in fields(record))]


def encode(record: Record) -> str:
    """A record's value in etcd."""
    return json.dumps(record_row(record), separators=(",", ":"), allow_nan=False)


def decode(path: str, value: bytes) -> Record:
    """The record of ``value`` stored at ``path`` (under the prefix), checked as a store's
    row is, and that ``path`` is the record's own key.

    Raises:
        RecordError: not JSON, not an array, a value of the wrong type or out of range, or
            a record at another record's key.
    """
    table = path.split("/", 1)[0]
    if table not in _TABLES:
        raise RecordError(f"no table {table!r}")
    try:
        row = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"not JSON: {exc}") from exc
    if not isinstance(row, list):
        raise RecordError("not a JSON array")
    record = parse_row(table, row)
    if record_path(record) != path:
        raise RecordError(f"the record of {record_path(record)!r}")
    return record


@dataclass
class _Txn:
    """The net effect of a sequence of changes: each key put or deleted once, and the
    ranges deleted (none of which holds a key of ``ops``)."""

    ops: dict[str, str | None]
    ranges: dict[str, set[str]]
    """Each range deleted, with the keys of the calls known in it when it was."""
    calls: dict[int, int]
    """Each call's session by index, as it is after the changes."""

    def put(self, path: str, value: str) -> None:
        for prefix in [p for p in self.ranges if path.startswith(p)]:
            for key in self.ranges.pop(prefix):
                self.ops.setdefault(key, None)
        self.ops[path] = value

    def delete(self, path: str) -> None:
        if not any(path.startswith(p) for p in self.ranges):
            self.ops[path] = None

    def delete_range(self, prefix: str, known: set[str]) -> None:
        for path in [p for p in self.ops if p.startswith(prefix)]:
            del self.ops[path]
        self.ranges[prefix] = self.ranges.get(prefix, set()) | known

    def requests(self, root: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path, value in self.ops.items():
            if value is None:
                out.append({"request_delete_range": {"key": b64(root + path)}})
            else:
                out.append({"request_put": {"key": b64(root + path), "value": b64(value)}})
        for prefix in sorted(self.ranges):
            out.append({"request_delete_range": {"key": b64(root + prefix),
                                                 "range_end": b64(prefix_end(root + prefix))}})
        return out


def plan(changes: Sequence[Change], calls: dict[int, int]) -> _Txn:
    """The transaction of ``changes`` given each known call's session (``calls``).

    Raises:
        StoreError: a record with a value of the wrong type or out of range, or a change
            that is not a record or a :class:`~alg.snapshot.Forget`.
    """
    txn = _Txn({}, {}, dict(calls))
    for change in changes:
        match change:
            case (SessionRecord() | ConnectionRecord() | CallRecord() | HeldRecord()
                  | PlainGreRecord() | HostRecord()):
                try:
                    record = validated(change)
                except RecordError as exc:
                    raise StoreError(f"{type(change).__name__}: {exc}") from exc
                if isinstance(record, CallRecord):
                    old = txn.calls.get(record.index)
                    if old is not None and old != record.session_id:
                        txn.delete(f"call/{old}/{record.index}")
                    txn.calls[record.index] = record.session_id
                txn.put(record_path(record), encode(record))
            case Forget(table="session" | "connection" as table, key=int() as key):
                if table == "session":
                    txn.delete(f"session/{key}")
                txn.delete(f"connection/{key}")
                known = {i for i, s in txn.calls.items() if s == key}
                txn.delete_range(f"call/{key}/", {f"call/{key}/{i}" for i in known})
                for index in known:
                    del txn.calls[index]
            case Forget(table="call", key=int() as key):
                owner = txn.calls.pop(key, None)
                if owner is not None:
                    txn.delete(f"call/{owner}/{key}")
            case Forget(table="host", key=IPv4Address() as key):
                txn.delete(_forget_path("host", key))
            case Forget(table="plain", key=(IPv4Address(), IPv4Address()) as key):
                txn.delete(_forget_path("plain", key))
            case Forget(table="held", key=(IPv4Address(), IPv4Address(), int()) as key):
                txn.delete(_forget_path("held", key))
            case _:
                raise StoreError(f"cannot write {change!r}")
    return txn


class EtcdStore:
    """A gateway's records in an etcd cluster.

    Args:
        endpoints: the client URLs of the cluster's members (``http://host:port``).
        cluster: the name of the controllers' cluster (the first part of the prefix).
        gateway: the gateway's name.
        guard: what each write must check, called once per write; None: writes are not
            guarded. A guard function that returns None refuses the write
            (:class:`StoreFencedError`: this controller holds nothing).
        request_timeout: seconds for one request on one member.
        deadline: seconds for one call of the store over every member.
        max_ops: the most operations one transaction holds (the cluster's
            ``--max-txn-ops``).

    Raises:
        ValueError: no endpoint, or one that is not a client URL.
    """

    def __init__(self, endpoints: Sequence[str], cluster: str, gateway: str, *,
                 guard: Callable[[], Guard | None] | None = None,
                 request_timeout: float = REQUEST_TIMEOUT, deadline: float = DEADLINE,
                 clock: Callable[[], float] = time.monotonic,
                 max_ops: int = MAX_TXN_OPS) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.path = ",".join(endpoints)
        self.endpoints = list(endpoints)
        self.prefix = records_prefix(cluster, gateway)
        self._clients = []
        for endpoint in endpoints:
            protocol, host, port = parse_endpoint(endpoint)
            self._clients.append(etcd3gw.client(host=host, port=port, protocol=protocol,
                                                timeout=request_timeout, api_path="/v3/"))
        self.guard = guard
        self._timeout = request_timeout
        self._deadline = deadline
        self._clock = clock
        self._max_ops = max_ops
        self._current = 0
        self._calls: dict[int, int] = {}
        self.writes = 0
        self.records_written = 0
        self.failovers = 0
        """Requests sent to another member after one failed to answer."""
        self.warm: WarmSource | None = None
        """A copy of the records kept by a watch (``ryu_apps.warm_copy``), which
        :meth:`load` takes instead of reading etcd when it is current."""
        self.loaded_from = ""
        """Where the last :meth:`load` took the records: ``etcd``, or ``warm copy``."""

    def close(self) -> None:
        """Close the members' connections."""
        for client in self._clients:
            client.session.close()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """The answer of the first member that answers ``body`` at ``/v3/<path>``.

        Raises:
            StoreUnreachableError: none answered within the deadline.
            StoreError: a member refused the request.
        """
        end = self._clock() + self._deadline
        errors: list[str] = []
        count = len(self._clients)
        attempt = 0
        while True:
            client = self._clients[(self._current + attempt) % count]
            left = end - self._clock()
            client.timeout = max(0.001, min(self._timeout, left))
            try:
                answer = client.post(client.get_url(path), json=body)
            except (etcd_errors.ConnectionFailedError,
                    etcd_errors.ConnectionTimeoutError) as exc:
                errors.append(f"{client.base_url}: {type(exc).__name__}")
                attempt += 1
                if self._clock() >= end:
                    raise StoreUnreachableError(
                        f"etcd {self.path}: no member answered within {self._deadline} s "
                        f"({'; '.join(errors[-count:])})") from exc
                self.failovers += 1
                if attempt % count == 0:
                    time.sleep(min(0.05, max(0.0, end - self._clock())))
                continue
            except etcd_errors.Etcd3Exception as exc:
                raise StoreError(f"etcd {client.base_url}: {exc.detail_text or exc}") from exc
            except ValueError as exc:
                raise StoreError(f"etcd {client.base_url}: not JSON: {exc}") from exc
            self._current = (self._current + attempt) % count
            return answer

    def _txn(self, requests: list[dict[str, Any]]) -> None:
        """Send one transaction, guarded if the store is.

        Raises:
            StoreFencedError: the guard no longer holds (nothing written).
            StoreError: the transaction was not carried out.
        """
        guard = None if self.guard is None else self.guard()
        if self.guard is not None and guard is None:
            raise StoreFencedError(f"etcd {self.path}: no guard held, nothing written")
        compares = [] if guard is None else guard.compares()
        answer = self.post("kv/txn", {"compare": compares, "success": requests,
                                       "failure": []})
        if not isinstance(answer, dict):
            raise StoreError(f"etcd {self.path}: a transaction's answer is not an object")
        if not answer.get("succeeded", False):
            if guard is not None:
                raise StoreFencedError(f"etcd {self.path}: the guard {guard.key!r} no longer "
                                  "holds, nothing written")
            raise StoreError(f"etcd {self.path}: the transaction failed")

    def write(self, changes: Iterable[Change]) -> None:
        """Write one event's changes in one transaction.

        Raises:
            StoreFencedError: the guard no longer holds (nothing written).
            StoreError: the write failed (nothing of it is in etcd), or a record holds a
                value of the wrong type or out of range (nothing sent).
        """
        changes = list(changes)
        if not changes:
            return
        txn = plan(changes, self._calls)
        requests = txn.requests(self.prefix)
        for start in range(0, len(requests), self._max_ops):
            self._txn(requests[start:start + self._max_ops])
        self._calls = txn.calls
        self.writes += 1
        self.records_written += len(changes)

    def clear(self) -> None:
        """Remove every record of the gateway.

        Raises:
            StoreFencedError: the guard no longer holds (nothing removed).
            StoreError: etcd could not be written.
        """
        self._txn([{"request_delete_range": {
            "key": b64(self.prefix), "range_end": b64(prefix_end(self.prefix))}}])
        self._calls = {}

    def read(self) -> tuple[list[tuple[str, bytes]], int]:
        """Every key under the prefix with its value, and the revision they were read at.

        Raises:
            StoreError: etcd could not be read.
        """
        items: list[tuple[str, bytes]] = []
        start, revision = self.prefix, 0
        end = b64(prefix_end(self.prefix))
        while True:
            body: dict[str, Any] = {"key": b64(start), "range_end": end, "limit": PAGE}
            if revision:
                body["revision"] = revision
            answer = self.post("kv/range", body)
            try:
                revision = revision or int(answer["header"]["revision"])
                kvs = answer.get("kvs", [])
                for kv in kvs:
                    items.append((base64.b64decode(kv["key"]).decode(),
                                  base64.b64decode(kv.get("value", ""))))
            except (KeyError, TypeError, ValueError) as exc:
                raise StoreError(f"etcd {self.path}: a range's answer: {exc!r}") from exc
            if not answer.get("more", False) or not kvs:
                return items, revision
            start = items[-1][0] + "\0"

    def load(self) -> Snapshot:
        """Every record of the gateway whose values have their types and ranges: from
        :attr:`warm` when it reached the writer's generation within :data:`WARM_WAIT`
        seconds (every write of an earlier holder is below that revision), else read
        from etcd. A writer's load stops the warm copy: it is master from then on.

        A key whose value is not such a record (:func:`decode`) is left out, described in
        the snapshot's ``rejected`` and removed in one transaction (left where the guard
        no longer holds: a standby reads, it does not write).

        Raises:
            StoreError: etcd could not be read or written.
        """
        guard = None if self.guard is None else self.guard()
        generation = None if guard is None else guard.create_revision
        if (self.warm is not None and generation is not None
                and self.warm.current(generation, WARM_WAIT)):
            self.loaded_from = "warm copy"
            items = self.warm.items()
        else:
            self.loaded_from = "etcd"
            items, _ = self.read()
        if self.warm is not None and generation is not None:
            self.warm.stop()
            self.warm = None
        snapshot = Snapshot()
        lists: dict[Table, list[Any]] = {
            "session": snapshot.sessions, "connection": snapshot.connections,
            "call": snapshot.calls, "held": snapshot.held, "plain": snapshot.plain,
            "host": snapshot.hosts,
        }
        bad: list[str] = []
        calls: dict[int, int] = {}
        for key, value in items:
            path = key[len(self.prefix):]
            try:
                record = decode(path, value)
            except RecordError as exc:
                bad.append(key)
                snapshot.rejected.append(f"{path}: {exc}")
                continue
            if isinstance(record, CallRecord):
                calls[record.index] = record.session_id
            lists[record_key(record)[0]].append(record)
        for start in range(0, len(bad), self._max_ops):
            with contextlib.suppress(StoreFencedError):
                self._txn([{"request_delete_range": {"key": b64(key)}}
                           for key in bad[start:start + self._max_ops]])
        self._calls = calls
        return snapshot
