"""The app's SQLite store (``ryu_apps.store``): what it writes it gives back, a session's
removal takes its connection and calls, and a file it cannot use is refused by name."""

from __future__ import annotations

import sqlite3
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

import pytest

from alg.errors import StoreError
from alg.snapshot import (
    CallRecord,
    ConnectionRecord,
    Forget,
    HeldRecord,
    PlainGreRecord,
    SessionRecord,
    Snapshot,
)
from ryu_apps import nat_gateway
from ryu_apps.framework import hub
from ryu_apps.store import Store
from tests.unit.app_env import IN1, IN2, OPTIONS, OUT
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
    app._write([SESSION])
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
    monkeypatch.setattr(nat_gateway, "CONF", SimpleNamespace(
        nat={**OPTIONS, "state_file": str(path)}))
    monkeypatch.setattr(hub, "spawn", lambda *_a, **_k: None)
    dp = FakeDatapath()
    app = nat_gateway.NatGateway()
    ports = [SimpleNamespace(name=n.encode(), port_no=no)
             for n, no in (("in1", IN1), ("in2", IN2), ("out", OUT))]
    app._switch_features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    app._port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=ports)))
    app._flow_stats(SimpleNamespace(msg=SimpleNamespace(
        xid=app._reconcile_xid, body=[], flags=0, datapath=dp)))
    assert app.ready and len(app.core.nat) == 0
    assert len(Store(path).load()) == 0
