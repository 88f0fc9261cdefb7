"""A controller's warm copy of a gateway's records in etcd, kept by a watch.

A standby reads the gateway's keys once (one range at one revision), then follows every
change through etcd's v3 watch (its JSON gateway streams one JSON object per response),
from the revision after the one it read. The watch covers the gateway's whole prefix,
the election key among the records, so the copy's :attr:`WarmCopy.revision` rises with
every change there, the election's included.

At promotion the copy is the records as etcd has them once its revision reached the
controller's generation (the election key's create revision): the old master's writes
were all guarded by its own key, which was gone before the new key was made, so every
one of them is below that revision (``ryu_apps.etcd_store.EtcdStore.load`` waits a
moment for that, and reads etcd instead when the copy is behind).

A broken stream is followed again from the copy's revision on the next member; a
revision etcd compacted away (the watch says so) is read again whole. Once the copy was
taken (:meth:`WarmCopy.stop`), the watch ends at its next response: a master has no use
for a copy of what it writes.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import requests

from alg.errors import StoreError
from ryu_apps.etcd_store import EtcdStore, b64, parse_endpoint, prefix_end

LOG = logging.getLogger("pptp_alg.gateway")
READ_TIMEOUT = 30.0
"""Seconds a watch stream may stay silent before it is opened again (from the copy's
revision: nothing is read twice)."""
RETRY = 0.5
"""Seconds between two attempts after a failure."""


def json_objects(chunks: Iterable[bytes]) -> Iterator[Any]:
    """The JSON objects of a stream of byte chunks, however the chunks cut them.

    Raises:
        StoreError: bytes that are not JSON.
    """
    decoder = json.JSONDecoder()
    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode("utf-8")
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                value, end = decoder.raw_decode(buffer)
            except json.JSONDecodeError as exc:
                if len(buffer) > 64 * 1024 * 1024:
                    raise StoreError(f"etcd: a watch response beyond 64 MiB: {exc}") from exc
                break
            yield value
            buffer = buffer[end:]


class CompactedError(StoreError):
    """The revision the watch started from was compacted away: read everything again."""


class WarmCopy:
    """The records of one gateway, as etcd has them at :attr:`revision`.

    Args:
        store: the gateway's store (its prefix, its members, its way to read).
        read_timeout: seconds a silent stream is kept.
    """

    def __init__(self, store: EtcdStore, read_timeout: float = READ_TIMEOUT) -> None:
        self.store = store
        self.prefix = store.prefix.removesuffix("records/")
        self.values: dict[str, bytes] = {}
        """Each record's key (under the store's prefix) and value."""
        self.revision = 0
        """Every change up to this revision is in the copy (0: not read yet)."""
        self.reads = 0
        """Whole reads of the records (the first, and after a compaction)."""
        self._read_timeout = read_timeout
        self._stopped = False
        self._next = 0
        self._session = requests.Session()

    def read(self) -> None:
        """Read every record at one revision.

        Raises:
            StoreError: etcd could not be read.
        """
        items, revision = self.store.read()
        self.values = dict(items)
        self.revision = revision
        self.reads += 1

    def items(self) -> list[tuple[str, bytes]]:
        """The records' keys and values."""
        return sorted(self.values.items())

    def apply(self, response: Any) -> None:
        """One watch response: its events in order, then its revision.

        Raises:
            CompactedError: the watch started below etcd's compacted revision.
            StoreError: a response that is not a watch response.
        """
        try:
            result = response["result"]
            if int(result.get("compact_revision", 0) or 0):
                raise CompactedError(f"etcd: compacted at {result['compact_revision']}")
            header = int(result["header"]["revision"])
            for event in result.get("events", []):
                kv = event["kv"]
                key = base64.b64decode(kv["key"]).decode()
                if key.startswith(self.store.prefix):
                    if event.get("type", "PUT") == "DELETE":
                        self.values.pop(key, None)
                    else:
                        self.values[key] = base64.b64decode(kv.get("value", ""))
                self.revision = max(self.revision, int(kv["mod_revision"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"etcd: a watch response: {exc!r}") from exc
        if not result.get("events") and not result.get("created"):
            self.revision = max(self.revision, header)

    def watch_once(self) -> None:
        """Follow the changes on one member until its stream ends or fails.

        Raises:
            StoreError: the member could not be reached or answered something else.
        """
        endpoint = self.store.endpoints[self._next % len(self.store.endpoints)]
        protocol, host, port = parse_endpoint(endpoint)
        body: dict[str, Any] = {"create_request": {
            "key": b64(self.prefix), "range_end": b64(prefix_end(self.prefix)),
            "start_revision": str(self.revision + 1), "progress_notify": True}}
        try:
            with self._session.post(f"{protocol}://{host}:{port}/v3/watch", json=body,
                                    stream=True, timeout=(1.0, self._read_timeout)) as answer:
                answer.raise_for_status()
                for response in json_objects(answer.iter_content(chunk_size=None)):
                    if self._stopped:
                        return
                    self.apply(response)
        except (requests.RequestException, UnicodeDecodeError) as exc:
            raise StoreError(f"etcd {endpoint}: the watch: {exc}") from exc

    def follow(self, stop: Callable[[], bool] = lambda: False,
               sleep: Callable[[float], None] = time.sleep) -> None:
        """Read, then follow, until ``stop()``; failures are logged once each, and the
        next member is tried after :data:`RETRY` seconds."""
        last = ""
        while not stop() and not self._stopped:
            try:
                if not self.revision:
                    self.read()
                self.watch_once()
            except CompactedError as exc:
                LOG.info("warm copy of %s: %s; reading every record again", self.prefix, exc)
                self.revision = 0
                continue
            except StoreError as exc:
                if str(exc) != last:
                    LOG.warning("warm copy of %s: %s", self.prefix, exc)
                last = str(exc)
                self._next += 1
            sleep(RETRY)

    def stop(self) -> None:
        """Follow no more (the watch ends at its next response)."""
        self._stopped = True

    def current(self, revision: int, wait: float,
                sleep: Callable[[float], None] = time.sleep) -> bool:
        """Whether the copy reached ``revision``, waiting up to ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while self.revision < revision:
            if time.monotonic() >= deadline:
                return False
            sleep(0.01)
        return True
