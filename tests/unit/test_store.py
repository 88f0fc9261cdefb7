"""The app's SQLite store (``ryu_apps.store``): what it writes it gives back, a session's
removal takes its connection and calls, and a file it cannot use is refused by name."""

from __future__ import annotations

import dataclasses
import sqlite3
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from alg.errors import StoreError
from alg.pptp import CallControl
from alg.snapshot import (
    CallRecord,
    ConnectionRecord,
    Forget,
    HeldRecord,
    PlainGreRecord,
    SessionRecord,
    Snapshot,
)
from ryu_apps import nat_gateway, rest
from ryu_apps.framework import hub
from ryu_apps.store import Store
from tests.unit.app_env import GW_MAC, OPTIONS, OUT, PORTS, PUBLIC, SERVER
from tests.unit.fake_switch import FakeDatapath

A, B, S = IPv4Address("192.168.1.1"), IPv4Address("203.0.113.2"), IPv4Address("203.0.113.1")
SESSION = SessionRecord(1, 6, A, 40000, B, 40000, S, 1723)
UDP = SessionRecord(2, 17, A, 5000, B, 5000, S, 53)
CONNECTION = ConnectionRecord(1, 1000, 900000, 1200, 900300)
CALL = CallRecord(3, 1, True, "established", 5, 5, 900, 1, 0.0, 4, 5)
HELD = HeldRecord(B, S, 7, 123.5)
PLAIN = PlainGreRecord(A, S, B, 8, 9, 1)


def test_what_is_written_comes_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.write([SESSION, UDP, CONNECTION, CALL, HELD, PLAIN])
    store.close()
    loaded = Store(tmp_path / "s.sqlite").load()
    assert loaded == Snapshot([SESSION, UDP], [CONNECTION], [CALL], [HELD], [PLAIN])
    store = Store(tmp_path / "s.sqlite")
    store.write([Forget("plain", (A, S))])
    assert store.load().plain == []
    store.clear()
    assert len(store.load()) == 0


def test_forgetting_a_session_takes_its_connection_and_calls(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.write([SESSION, UDP, CONNECTION, CALL, HELD])
    store.write([Forget("session", 1), Forget("held", (B, S, 7))])
    assert store.load() == Snapshot([UDP], [], [], [])
    expected = Snapshot([SESSION, UDP], [CONNECTION], [CALL], [HELD])
    expected.apply([Forget("session", 1), Forget("held", (B, S, 7))])
    assert expected == store.load()


def test_a_record_written_again_replaces_the_old_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.write([SESSION, CONNECTION, CALL])
    closed = CallRecord(3, 1, True, "closed", 5, 5, 900, 1, 60.0, 4, 5)
    store.write([closed])
    assert store.load().calls == [closed]
    assert store.writes == 2 and store.records_written == 4


@pytest.mark.parametrize("content", [b"this is not a database" * 100, b""])
def test_a_file_that_is_no_store_is_refused_by_name(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(content)
    if not content:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("INSERT INTO meta VALUES ('schema', '99')")
    with pytest.raises(StoreError, match=str(path)):
        Store(path)


def test_the_app_refuses_to_start_on_a_bad_state_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"garbage" * 1000)
    monkeypatch.setattr(nat_gateway, "CONF",
                        SimpleNamespace(nat={**OPTIONS, "state_file": str(path)}))
    monkeypatch.setattr(hub, "spawn", lambda *_a, **_k: None)
    with pytest.raises(SystemExit) as exc:
        nat_gateway.NatGateway()
    assert exc.value.code == 2
    assert "nat.state_file" in caplog.text


def test_a_failed_write_is_counted_and_the_gateway_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(nat_gateway, "CONF", SimpleNamespace(
        nat={**OPTIONS, "state_file": str(tmp_path / "s.sqlite")}))
    monkeypatch.setattr(hub, "spawn", lambda *_a, **_k: None)
    app = nat_gateway.NatGateway()
    assert app.store is not None
    app.store.close()
    app.effects.write([SESSION])
    assert app.counters.store_errors == 1 and app.counters.store_writes == 0


def test_records_the_app_cannot_read_are_removed_at_connect(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.write([SESSION])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE sessions SET inside_ip = 'not an address'")
    store.close()
    app = connected_app(monkeypatch, path)
    assert app.ready and len(app.core.nat) == 0
    assert len(Store(path).load()) == 0


# A state file is input: an attacker who can write it (or a disk that garbles it) crafts
# each bad value below. The row is left out, counted and removed; the others come back.

BAD_VALUES = [
    pytest.param("sessions", "inside_port", "'abc'", id="text-in-an-integer-column"),
    pytest.param("calls", "session_id", "'1'||'x'", id="text-session-of-a-call"),
    pytest.param("sessions", "public_port", "40000.5", id="fractional-port"),
    pytest.param("sessions", "inside_port", "70000", id="port-above-16-bits"),
    pytest.param("sessions", "id", str(1 << 48), id="session-id-beyond-the-cookie"),
    pytest.param("sessions", "proto", "-6", id="negative-protocol"),
    pytest.param("sessions", "remote_ip", "X'c0a80101'", id="address-as-a-blob"),
    pytest.param("connections", "client_isn", str(1 << 32), id="isn-beyond-32-bits"),
    pytest.param("calls", "public_call_id", "5.5", id="fractional-call-id"),
    pytest.param("calls", "hold_until", "'nan'", id="nan-hold-until"),
    pytest.param("calls", "outgoing", "2", id="flag-neither-0-nor-1"),
    pytest.param("calls", "call_index", str(1 << 48), id="call-index-beyond-the-cookie"),
    pytest.param("calls", "inbound_entry", str((1 << 48) + 5), id="entry-aliasing-a-live-one"),
    pytest.param("calls", "state", "x'00'", id="state-as-a-blob"),
    pytest.param("held", "until", "'nan'", id="nan-hold-down"),
    pytest.param("held", "until", "'inf'", id="endless-hold-down"),
    pytest.param("held", "call_id", "65536", id="call-id-beyond-16-bits"),
    pytest.param("plain", "outbound_id", "0", id="id-zero"),
    pytest.param("plain", "claimed", "'1'||'x'", id="text-claim"),
]


def crafted(path: Path, table: str, column: str, value: str) -> None:
    """A store holding one of each record (two sessions), then one column of the first
    row of one table set to ``value`` (an SQL expression) by hand."""
    store = Store(path)
    store.write([SESSION, UDP, CONNECTION, CALL, HELD, PLAIN])
    store.close()
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE {table} SET {column} = {value} "
                   f"WHERE rowid = (SELECT min(rowid) FROM {table})")


@pytest.mark.parametrize(("table", "column", "value"), BAD_VALUES)
def test_a_crafted_value_leaves_its_row_out_and_the_others_in(
    tmp_path: Path, table: str, column: str, value: str
) -> None:
    path = tmp_path / "s.sqlite"
    crafted(path, table, column, value)
    loaded = Store(path).load()
    [line] = loaded.rejected
    assert line.startswith(f"{table} row ") and column.removeprefix("call_") in line
    assert len(loaded) == 5
    again = Store(path).load()  # the row is gone from the file
    assert again.rejected == [] and again == dataclasses.replace(loaded, rejected=[])


@pytest.mark.parametrize(("table", "column", "value"), BAD_VALUES)
def test_a_crafted_state_file_cannot_keep_the_app_from_becoming_ready(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, table: str, column: str, value: str
) -> None:
    path = tmp_path / "s.sqlite"
    crafted(path, table, column, value)
    app = connected_app(monkeypatch, path)
    assert app.ready
    assert app.core.counters.restore_records_rejected == 1
    assert app.core.counters.restore_failures == 0
    assert all(0 < s.id < 1 << 48 for s in app.core.nat.sessions())
    assert all(0 <= c.public_id < 1 << 16 for c in app.core.calls())
    now = app.now()
    for held in Store(path).load().held:
        assert now < held.until <= now + app.config.alg.call_id_hold_down


def failed_restore_app(monkeypatch: pytest.MonkeyPatch, path: Path) -> nat_gateway.NatGateway:
    """The app connected on a store of every kind of record, whose restore raises."""
    Store(path).write([SESSION, UDP, CONNECTION, CALL, HELD, PLAIN])

    def broken(*_args: object) -> bool:
        raise RuntimeError("a fault no check foresaw")

    monkeypatch.setattr(CallControl, "restore", broken)
    return connected_app(monkeypatch, path)


def test_a_restore_that_fails_starts_empty_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.sqlite"
    app = failed_restore_app(monkeypatch, path)
    assert app.ready and len(app.core.nat) == 0 and list(app.core.calls()) == []
    assert app.core.counters.restore_failures == 1
    assert "starts without its saved state" in caplog.text
    assert "a fault no check foresaw" in caplog.text
    assert len(Store(path).load()) == 0


def test_after_a_failed_restore_fragments_are_counted_where_the_app_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The core starts empty in the same counters object the fragment path holds: a
    fragment after the failed restore shows in the counters and the REST snapshot."""
    app = failed_restore_app(monkeypatch, tmp_path / "s.sqlite")
    assert app.core.counters.restore_failures == 1
    fragment = IP(src=str(SERVER), dst=str(PUBLIC), id=5, flags="MF", proto=47) / (b"g" * 8)
    app.handle_frame(app.datapath, OUT, bytes(Ether(src="02:00:00:00:00:77", dst=GW_MAC)
                                              / fragment))
    assert app.core.counters.fragments_received == 1
    assert app.fragments.reassembler.memory > 0
    alg = rest.snapshot_counters(app)["alg"]
    assert alg["fragments_received"] == 1 and alg["restore_failures"] == 1


def connected_app(monkeypatch: pytest.MonkeyPatch, path: Path) -> nat_gateway.NatGateway:
    """The app on ``path``, connected to a fake switch with no entries (restored)."""
    monkeypatch.setattr(nat_gateway, "CONF", SimpleNamespace(
        nat={**OPTIONS, "state_file": str(path)}))
    monkeypatch.setattr(hub, "spawn", lambda *_a, **_k: None)
    dp = FakeDatapath()
    app = nat_gateway.NatGateway()
    ports = [SimpleNamespace(name=n.encode(), port_no=no)
             for n, no in PORTS]
    app._switch_features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    app._port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=ports)))
    app._flow_stats(SimpleNamespace(msg=SimpleNamespace(
        xid=app.switch.reconcile_xid, body=[], flags=0, datapath=dp)))
    return app


def test_a_held_ids_host_is_kept_and_a_schema_1_file_is_taken_on(tmp_path: Path) -> None:
    """A held-down ID keeps the host whose share it counts against (``alg.callid``), so
    that a restart does not hand a churning host its share again; a file written before
    the column existed is migrated and keeps its rows (their host unknown)."""
    store = Store(tmp_path / "s.sqlite")
    owned = HeldRecord(B, S, 8, 200.0, A)
    store.write([HELD, owned])
    store.close()
    assert Store(tmp_path / "s.sqlite").load().held == [HELD, owned]
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', '1')")
        db.execute("CREATE TABLE held (public_ip TEXT NOT NULL, server_ip TEXT NOT NULL, "
                   "call_id INTEGER NOT NULL, until REAL NOT NULL, "
                   "PRIMARY KEY (public_ip, server_ip, call_id))")
        db.execute("INSERT INTO held VALUES (?, ?, 7, 123.5)", (str(B), str(S)))
    db.close()
    migrated = Store(old)
    assert migrated.load().held == [HELD]
    migrated.write([owned])
    assert migrated.load().held == [HELD, owned]


def test_host_bindings_are_kept_and_a_schema_2_file_gains_their_table(tmp_path: Path) -> None:
    from alg.snapshot import Forget, HostRecord

    store = Store(tmp_path / "s.sqlite")
    host = HostRecord(12, A, B, 3)
    store.write([host])
    store.close()
    assert Store(tmp_path / "s.sqlite").load().hosts == [host]
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', '2')")
    db.close()
    migrated = Store(old)
    assert migrated.load().hosts == []
    migrated.write([host])
    assert migrated.load().hosts == [host]
    migrated.write([Forget("host", A)])
    assert migrated.load().hosts == []
    with sqlite3.connect(old) as db:
        db.execute("INSERT INTO hosts VALUES (7, 'not an address', ?, 1)", (str(B),))
    db.close()
    loaded = Store(old).load()
    assert loaded.hosts == [] and len(loaded.rejected) == 1
