"""The app's store of the core's records: one SQLite file in WAL mode (``[nat] state_file``).

The core notes what must outlive the controller process (``alg.snapshot``); the app
writes each event's changes here in one transaction before it sends the event's
flow-mods and packets, and reads them back once on start for
:meth:`alg.engine.Gateway.restore`. WAL mode with ``synchronous=NORMAL``: a commit is
durable against the process dying (what a controller restart is), not necessarily
against the machine losing power, after which the switch's flows are gone too.

A session's removal takes its control connection and that connection's calls with it.
Every error is a :class:`~alg.errors.StoreError` that names the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from alg.errors import RecordError, StoreError
from alg.snapshot import (
    CallRecord,
    Change,
    ConnectionRecord,
    Forget,
    HeldRecord,
    HostRecord,
    PlainGreRecord,
    SessionRecord,
    Snapshot,
    Table,
    parse_row,
)

SCHEMA_VERSION = 3
_MIGRATIONS = {
    "1": "ALTER TABLE held ADD COLUMN host TEXT",
    "2": "SELECT 1",
}
"""What takes a file of an older schema version (the key) to the next one (from 2, the
``hosts`` table, which the schema makes where it is missing)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, proto INTEGER NOT NULL,
    inside_ip TEXT NOT NULL, inside_port INTEGER NOT NULL,
    public_ip TEXT NOT NULL, public_port INTEGER NOT NULL,
    remote_ip TEXT NOT NULL, remote_port INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS connections (
    session_id INTEGER PRIMARY KEY, client_isn INTEGER NOT NULL, server_isn INTEGER,
    outbound_seq INTEGER NOT NULL, inbound_seq INTEGER);
CREATE TABLE IF NOT EXISTS calls (
    call_index INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, outgoing INTEGER NOT NULL,
    state TEXT NOT NULL, client_call_id INTEGER, public_call_id INTEGER,
    server_call_id INTEGER, call_serial_number INTEGER, hold_until REAL NOT NULL,
    outbound_entry INTEGER, inbound_entry INTEGER);
CREATE INDEX IF NOT EXISTS calls_by_session ON calls (session_id);
CREATE TABLE IF NOT EXISTS held (
    public_ip TEXT NOT NULL, server_ip TEXT NOT NULL, call_id INTEGER NOT NULL,
    until REAL NOT NULL, host TEXT, PRIMARY KEY (public_ip, server_ip, call_id));
CREATE TABLE IF NOT EXISTS plain (
    client_ip TEXT NOT NULL, server_ip TEXT NOT NULL, public_ip TEXT NOT NULL,
    outbound_id INTEGER NOT NULL, inbound_id INTEGER NOT NULL, claimed INTEGER NOT NULL,
    PRIMARY KEY (client_ip, server_ip));
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER NOT NULL, inside_ip TEXT PRIMARY KEY, public_ip TEXT NOT NULL,
    block INTEGER NOT NULL);
"""
_TABLE_NAMES: dict[Table, str] = {
    "session": "sessions", "connection": "connections", "call": "calls", "held": "held",
    "plain": "plain", "host": "hosts",
}
_TABLES = tuple(_TABLE_NAMES.values())
_SAVE_SESSION = "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_SAVE_CONNECTION = "INSERT OR REPLACE INTO connections VALUES (?, ?, ?, ?, ?)"
_SAVE_CALL = "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SAVE_HELD = "INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?, ?)"
_SAVE_PLAIN = "INSERT OR REPLACE INTO plain VALUES (?, ?, ?, ?, ?, ?)"
_SAVE_HOST = "INSERT OR REPLACE INTO hosts VALUES (?, ?, ?, ?)"


class RecordStore(Protocol):
    """What the app needs of a store of the core's records (:class:`Store`, and
    ``ryu_apps.etcd_store.EtcdStore``)."""

    path: str
    writes: int
    records_written: int
    loaded_from: str

    def load(self) -> Snapshot:
        """Every valid record."""

    def write(self, changes: Iterable[Change]) -> None:
        """Write one event's changes."""

    def clear(self) -> None:
        """Remove every record."""

    def close(self) -> None:
        """Let go of the store."""


class Store:
    """The records in one SQLite file, made if missing.

    Args:
        path: the file (its folder must exist).

    Raises:
        StoreError: the file cannot be opened, is not such a store, or is of another
            schema version.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            while row is not None and row[0] in _MIGRATIONS:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.execute(_MIGRATIONS[row[0]])
                    row = (str(int(row[0]) + 1),)
                    self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", row)
            if row is not None and row[0] != str(SCHEMA_VERSION):
                raise StoreError(f"{self.path}: schema version {row[0]}, this app writes "
                                 f"{SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        self.writes = 0
        self.records_written = 0
        self.loaded_from = "the state file"

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def load(self) -> Snapshot:
        """Every record in the file whose values have their types and ranges.

        A row with a value of the wrong type or out of range
        (:func:`alg.snapshot.parse_row`) is left out, described in the snapshot's
        ``rejected`` and removed from the file.

        Raises:
            StoreError: the file cannot be read or written.
        """
        snapshot = Snapshot()
        lists: dict[Table, list[Any]] = {
            "session": snapshot.sessions, "connection": snapshot.connections,
            "call": snapshot.calls, "held": snapshot.held, "plain": snapshot.plain,
            "host": snapshot.hosts,
        }
        try:
            for table, name in _TABLE_NAMES.items():
                bad = []
                for rowid, *row in self._db.execute(f"SELECT rowid, * FROM {name}"):
                    try:
                        lists[table].append(parse_row(table, row))
                    except RecordError as exc:
                        bad.append((rowid,))
                        snapshot.rejected.append(f"{name} row {rowid}: {exc}")
                if bad:
                    with self._db:
                        self._db.execute("BEGIN")
                        self._db.executemany(f"DELETE FROM {name} WHERE rowid = ?", bad)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return snapshot

    def clear(self) -> None:
        """Remove every record (a store that could not be read is started afresh).

        Raises:
            StoreError: the file cannot be written.
        """
        try:
            with self._db:
                self._db.execute("BEGIN")
                for table in _TABLES:
                    self._db.execute(f"DELETE FROM {table}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def write(self, changes: Iterable[Change]) -> None:
        """Write one event's changes in one transaction.

        Raises:
            StoreError: the write failed (nothing of it is in the file).
        """
        changes = list(changes)
        if not changes:
            return
        db = self._db
        try:
            db.execute("BEGIN")
            try:
                for change in changes:
                    self._write(change)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        self.writes += 1
        self.records_written += len(changes)

    def _write(self, change: Change) -> None:
        db = self._db
        match change:
            case SessionRecord():
                db.execute(_SAVE_SESSION, (
                    change.id, change.proto, str(change.inside_ip), change.inside_port,
                    str(change.public_ip), change.public_port, str(change.remote_ip),
                    change.remote_port,
                ))
            case ConnectionRecord():
                db.execute(_SAVE_CONNECTION, (
                    change.session_id, change.client_isn, change.server_isn,
                    change.outbound_seq, change.inbound_seq,
                ))
            case CallRecord():
                db.execute(_SAVE_CALL, (
                    change.index, change.session_id, int(change.outgoing), change.state,
                    change.client_call_id, change.public_call_id, change.server_call_id,
                    change.call_serial_number, change.hold_until, change.outbound_entry,
                    change.inbound_entry,
                ))
            case HeldRecord():
                db.execute(_SAVE_HELD, (
                    str(change.public_ip), str(change.server_ip), change.call_id, change.until,
                    None if change.host is None else str(change.host),
                ))
            case PlainGreRecord():
                db.execute(_SAVE_PLAIN, (
                    str(change.client_ip), str(change.server_ip), str(change.public_ip),
                    change.outbound_id, change.inbound_id, change.claimed,
                ))
            case HostRecord():
                db.execute(_SAVE_HOST, (change.id, str(change.inside_ip),
                                        str(change.public_ip), change.block))
            case Forget(table="host", key=inside_ip):
                db.execute("DELETE FROM hosts WHERE inside_ip = ?", (str(inside_ip),))
            case Forget(table="session", key=key):
                db.execute("DELETE FROM sessions WHERE id = ?", (key,))
                db.execute("DELETE FROM connections WHERE session_id = ?", (key,))
                db.execute("DELETE FROM calls WHERE session_id = ?", (key,))
            case Forget(table="connection", key=key):
                db.execute("DELETE FROM connections WHERE session_id = ?", (key,))
                db.execute("DELETE FROM calls WHERE session_id = ?", (key,))
            case Forget(table="call", key=key):
                db.execute("DELETE FROM calls WHERE call_index = ?", (key,))
            case Forget(table="plain", key=(client_ip, server_ip)):
                db.execute("DELETE FROM plain WHERE client_ip = ? AND server_ip = ?",
                           (str(client_ip), str(server_ip)))
            case Forget(table="held", key=(public_ip, server_ip, call_id)):
                db.execute(
                    "DELETE FROM held WHERE public_ip = ? AND server_ip = ? AND call_id = ?",
                    (str(public_ip), str(server_ip), call_id),
                )
            case _:
                raise StoreError(f"{self.path}: cannot write {change!r}")


