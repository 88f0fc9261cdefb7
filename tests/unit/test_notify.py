"""The service manager's notifications (``ryu_apps.notify``), received on a real AF_UNIX
datagram socket, from the module alone and from the app on two fake switches."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from alg.events import EntryKind
from ryu_apps import nat_gateway, notify, switch
from ryu_apps.framework import hub
from ryu_apps.framework import ofproto_v1_3_parser as parser
from ryu_apps.nat_gateway import NatGateway
from tests.unit.fake_switch import FakeSwitch
from tests.unit.test_closed_loop import Clock
from tests.unit.test_gateways_loop import NAT, FakeConf, gateway_options

REPO = Path(__file__).resolve().parents[2]


class Listener:
    """The service manager's end: a datagram socket bound at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(5.0)

    def messages(self) -> list[dict[str, str]]:
        """Every datagram waiting, as its ``KEY=VALUE`` lines."""
        got = []
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(4096)
                except BlockingIOError:
                    return got
                got.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
        finally:
            self.sock.settimeout(5.0)

    def next(self) -> dict[str, str]:
        """The next datagram (waiting up to 5 s)."""
        data = self.sock.recv(4096)
        return dict(line.split("=", 1) for line in data.decode().split("\n"))


@pytest.fixture
def listener() -> Iterator[Listener]:
    # A short folder of its own: a socket's path has at most 107 bytes.
    with tempfile.TemporaryDirectory(prefix="notify-") as folder:
        listening = Listener(os.path.join(folder, "notify"))
        try:
            yield listening
        finally:
            listening.sock.close()


# The address.

@pytest.mark.parametrize(("value", "expected"), [
    ("", None),
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@abstract/name", b"\0abstract/name"),
])
def test_the_variable_names_a_path_or_an_abstract_socket(
    value: str, expected: str | bytes | None
) -> None:
    assert notify.address(value) == expected


@pytest.mark.parametrize("value", ["run/notify", "@", "vsock:2:1234"])
def test_another_value_names_no_socket_and_sends_nothing(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        notify.address(value)
    with caplog.at_level(logging.WARNING, "pptp_alg.notify"):
        notifier = notify.Notifier.from_environment({notify.ENV: value})
    assert not notifier.enabled
    assert not notifier.send("READY=1")
    assert "NOTIFY_SOCKET" in caplog.text


def test_without_the_variable_nothing_is_sent() -> None:
    notifier = notify.Notifier.from_environment({})
    assert not notifier.enabled
    assert not notifier.send("READY=1")


# Sending.

def test_the_lines_arrive_in_one_datagram(listener: Listener) -> None:
    notifier = notify.Notifier.from_environment({notify.ENV: listener.path})
    assert notifier.enabled
    assert notifier.send("READY=1", "STATUS=all ready")
    assert listener.sock.recv(4096) == b"READY=1\nSTATUS=all ready"


def test_an_abstract_socket_is_reached_by_its_at_name() -> None:
    name = f"pptp-alg-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5.0)
        assert notify.Notifier.from_environment({notify.ENV: f"@{name}"}).send("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_a_socket_that_is_gone_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = notify.Notifier(str(tmp_path / "nobody"))
    with caplog.at_level(logging.WARNING, "pptp_alg.notify"):
        assert not notifier.send("READY=1")
    assert "cannot tell the service manager READY=1" in caplog.text


# Readiness.

def test_status_names_the_ready_and_the_waiting() -> None:
    labels = {"g1": "g1 (bridge br-one)"}
    assert notify.status({"g1": False, "g2": False}, labels) == (
        "0 of 2 gateways ready; waiting for the switch of g1 (bridge br-one), g2")
    assert notify.status({"g1": True, "g2": False}, labels) == (
        "1 of 2 gateways ready: g1 (bridge br-one); waiting for the switch of g2")
    assert notify.status({"g1": True}, labels) == "1 of 1 gateway ready: g1 (bridge br-one)"


def test_ready_is_sent_once_when_every_gateway_is_ready_and_status_on_each_change(
    listener: Listener,
) -> None:
    readiness = notify.Readiness(notify.Notifier(listener.path), {})
    readiness.update({"a": False, "b": False})
    assert listener.next() == {"STATUS": "0 of 2 gateways ready; waiting for the switch "
                                          "of a, b"}
    readiness.update({"a": True, "b": False})
    readiness.update({"a": True, "b": False})
    assert listener.next() == {"STATUS": "1 of 2 gateways ready: a; waiting for the "
                                          "switch of b"}
    assert listener.messages() == []
    readiness.update({"a": True, "b": True})
    assert listener.next() == {"READY": "1", "STATUS": "2 of 2 gateways ready: a, b"}
    assert readiness.announced
    readiness.update({"a": False, "b": True})
    readiness.update({"a": True, "b": True})
    assert listener.messages() == [
        {"STATUS": "1 of 2 gateways ready: b; waiting for the switch of a"},
        {"STATUS": "2 of 2 gateways ready: a, b"},
    ]


# SIGTERM.

def test_sigterm_sends_stopping_then_calls_the_handler_before(listener: Listener) -> None:
    calls: list[int] = []
    handler = notify.on_sigterm(notify.Notifier(listener.path),
                                lambda signum, _frame: calls.append(signum))
    handler(signal.SIGTERM, None)
    assert listener.next() == {"STOPPING": "1", "STATUS": "stopping (SIGTERM)"}
    assert calls == [signal.SIGTERM]


def test_sigterm_ignored_before_stays_ignored(listener: Listener) -> None:
    notify.on_sigterm(notify.Notifier(listener.path), signal.SIG_IGN)(signal.SIGTERM, None)
    assert listener.next()["STOPPING"] == "1"


def test_sigterm_still_ends_the_process_after_stopping(listener: Listener) -> None:
    code = ("import os, signal, time\n"
            "from ryu_apps import notify\n"
            "assert notify.stopping_on_sigterm(notify.Notifier.from_environment())\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(10)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=30,
                          env={**os.environ, notify.ENV: listener.path, "PYTHONPATH": str(REPO)})
    assert done.returncode == -signal.SIGTERM
    assert listener.next() == {"STOPPING": "1", "STATUS": "stopping (SIGTERM)"}


# The app.

class AnsweringSwitch(FakeSwitch):
    """A fake switch that answers a configuration request when the test says so (a real
    switch answers after everything before the barrier sent ahead of it)."""

    def __init__(self, tag: str, datapath_id: int, clock: Clock) -> None:
        super().__init__({f"{tag}1": 1, f"{tag}2": 2, f"{tag}out": 100}, clock,
                         bridge=f"br-{tag}", datapath_id=datapath_id)
        self.asked: list[type] = []

    def send_msg(self, msg: Any) -> None:
        if isinstance(msg, parser.OFPBarrierRequest | parser.OFPGetConfigRequest):
            self.asked.append(type(msg))
        if not isinstance(msg, parser.OFPGetConfigRequest):
            super().send_msg(msg)

    def answer(self) -> None:
        """Answer the configuration request."""
        assert self.asked == [parser.OFPBarrierRequest, parser.OFPGetConfigRequest]
        self.asked = []
        self._to_app(parser.OFPGetConfigReply(self, flags=0, miss_send_len=0xFFFF))
        self.run()

    def pipeline(self) -> bool:
        """True when a pipeline entry is in the table."""
        return any(e.cookie == switch.cookie(EntryKind.PIPELINE) for e in self.table)


@pytest.fixture
def two_gateways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nat_gateway, "CONF", FakeConf(NAT, {
        "a": gateway_options("a"), "b": gateway_options("b", ct_zone=2)}))
    monkeypatch.setattr(hub, "spawn", lambda *_a, **_k: None)


def test_the_app_is_ready_once_both_switches_confirm_the_pipeline(
    listener: Listener, monkeypatch: pytest.MonkeyPatch, two_gateways: None
) -> None:
    monkeypatch.setenv(notify.ENV, listener.path)
    installed: list[notify.Notifier] = []
    monkeypatch.setattr(notify, "stopping_on_sigterm", installed.append)
    clock = Clock()
    app = NatGateway()
    app.now = clock  # type: ignore[method-assign]
    assert [n.target for n in installed] == [listener.path]
    assert listener.next() == {"STATUS": "0 of 2 gateways ready; waiting for the switch of "
                                          "a (bridge br-a), b (bridge br-b)"}
    a, b = AnsweringSwitch("a", 0xA, clock), AnsweringSwitch("b", 0xB, clock)
    a.connect(app)
    assert a.pipeline() and app.gateways["a"].ready
    assert listener.messages() == []  # not before the switch answered
    a.answer()
    assert listener.next() == {"STATUS": "1 of 2 gateways ready: a (bridge br-a); waiting "
                                          "for the switch of b (bridge br-b)"}
    b.connect(app)
    assert listener.messages() == []
    b.answer()
    assert listener.next() == {"READY": "1", "STATUS": "2 of 2 gateways ready: a (bridge "
                                                       "br-a), b (bridge br-b)"}
    app._switch_gone(SimpleNamespace(datapath=b))
    assert listener.next() == {"STATUS": "1 of 2 gateways ready: a (bridge br-a); waiting "
                                          "for the switch of b (bridge br-b)"}
    b.connect(app)
    b.answer()
    assert listener.next() == {"STATUS": "2 of 2 gateways ready: a (bridge br-a), b (bridge "
                                          "br-b)"}
    assert listener.messages() == [] and a.asked == []


def test_without_the_variable_the_app_asks_the_switch_nothing_more(
    monkeypatch: pytest.MonkeyPatch, two_gateways: None
) -> None:
    monkeypatch.delenv(notify.ENV, raising=False)
    installed: list[Any] = []
    monkeypatch.setattr(notify, "stopping_on_sigterm", installed.append)
    clock = Clock()
    app = NatGateway()
    app.now = clock  # type: ignore[method-assign]
    a = AnsweringSwitch("a", 0xA, clock)
    a.connect(app)
    assert app.gateways["a"].ready and a.asked == []
    assert not app.readiness.notifier.enabled and installed == []


class Standby:
    """A gateway whose controller is a standby the switch made slave."""

    datapath = object()
    ready = False
    standing_by = True


def test_a_standby_is_ready_once_slave_and_asks_the_switch_nothing(listener: Listener) -> None:
    service = notify.ServiceReadiness(notify.Readiness(notify.Notifier(listener.path), {}))
    service.tell({"a": Standby()})
    assert listener.next() == {"READY": "1", "STATUS": "1 of 1 gateway ready: a"}
