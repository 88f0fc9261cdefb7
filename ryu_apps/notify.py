"""Readiness and status for a service manager (systemd's ``sd_notify`` protocol).

Standard library only, no Ryu. A service of ``Type=notify`` is started with
:data:`ENV` naming an AF_UNIX datagram socket: a path, or an abstract socket when the
name starts with ``@``. The service sends it datagrams of newline-separated
``KEY=VALUE`` lines: ``READY=1`` when it has started, ``STATUS=`` text for
``systemctl status``, ``STOPPING=1`` when it begins to stop.

The app (``ryu_apps.nat_gateway``) keeps a :class:`ServiceReadiness` of its gateways: each
change of which gateways are ready (the switch READY, ``ryu_apps.lifecycle``, and the
pipeline confirmed in its tables) is a ``STATUS=`` line, and the first time every
gateway is ready, ``READY=1`` goes with it. With
the variable set, SIGTERM first sends ``STOPPING=1`` (:func:`stopping_on_sigterm`), then
does what it did before. Without the variable nothing is sent; a datagram that cannot be
sent is logged, never raised: the gateway works the same whether a service manager
hears it or not.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, Final, Protocol

LOG = logging.getLogger("pptp_alg.notify")

ENV: Final = "NOTIFY_SOCKET"
"""The environment variable that names the service manager's socket."""

Handler = Callable[[int, FrameType | None], object] | int | None
"""A signal's handler as ``signal.getsignal`` returns it."""


def address(value: str) -> str | bytes | None:
    """The socket address that :data:`ENV`'s ``value`` names.

    Returns:
        An absolute path as it is, ``@name`` as the abstract name (bytes beginning with a
        NUL byte), None for an empty value.

    Raises:
        ValueError: any other value (a relative path, another kind of socket).
    """
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    raise ValueError(f"{ENV}={value!r}: neither an absolute path nor @name")


class Notifier:
    """Sends datagrams to the service manager's socket.

    Args:
        target: the socket's address (:func:`address`); None sends nothing.
    """

    def __init__(self, target: str | bytes | None) -> None:
        self.target = target

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier of :data:`ENV` in ``environ`` (default ``os.environ``); a value
        that names no usable socket is logged and sends nothing."""
        value = (os.environ if environ is None else environ).get(ENV, "")
        try:
            return cls(address(value))
        except ValueError as exc:
            LOG.warning("not telling the service manager anything: %s", exc)
            return cls(None)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to send to."""
        return self.target is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=VALUE`` each) in one datagram.

        Returns:
            True when the datagram was sent; False without a socket or when sending
            failed (logged).
        """
        if self.target is None:
            return False
        data = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(1.0)
                sock.sendto(data, self.target)
        except OSError as exc:
            LOG.warning("cannot tell the service manager %s: %s", " ".join(lines), exc)
            return False
        return True


def status(ready: Mapping[str, bool], labels: Mapping[str, str]) -> str:
    """The ``STATUS=`` text of the gateways' readiness.

    Args:
        ready: gateway name -> whether its switch is READY.
        labels: gateway name -> how to name it (its name when missing).
    """
    up = [labels.get(name, name) for name, is_ready in ready.items() if is_ready]
    waiting = [labels.get(name, name) for name, is_ready in ready.items() if not is_ready]
    text = f"{len(up)} of {len(ready)} gateway{'' if len(ready) == 1 else 's'} ready"
    if up:
        text += ": " + ", ".join(up)
    if waiting:
        text += "; waiting for the switch of " + ", ".join(waiting)
    return text


class Readiness:
    """What the service manager is told of the gateways' readiness.

    Args:
        notifier: where it goes.
        labels: gateway name -> how ``STATUS=`` names it.

    Attributes:
        announced: True once ``READY=1`` was sent (or, without a socket, would have been).
    """

    def __init__(self, notifier: Notifier, labels: Mapping[str, str]) -> None:
        self.notifier = notifier
        self.labels = dict(labels)
        self.announced = False
        self._last: dict[str, bool] | None = None

    def update(self, ready: Mapping[str, bool]) -> None:
        """The gateways' readiness now (name -> whether its switch is READY): when it
        changed, a ``STATUS=`` line, with ``READY=1`` the first time all are ready."""
        now = dict(ready)
        if now == self._last:
            return
        self._last = now
        lines = [f"STATUS={status(now, self.labels)}"]
        if not self.announced and now and all(now.values()):
            self.announced = True
            lines.insert(0, "READY=1")
        self.notifier.send(*lines)


def on_sigterm(notifier: Notifier, previous: Handler) -> Callable[[int, FrameType | None],
                                                                   None]:
    """A SIGTERM handler that sends ``STOPPING=1``, then does what ``previous`` did: calls
    it, ignores the signal, or ends the process by SIGTERM as the default action does."""

    def handler(signum: int, frame: FrameType | None) -> None:
        try:
            notifier.send("STOPPING=1", "STATUS=stopping (SIGTERM)")
        finally:
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

    return handler


def stopping_on_sigterm(notifier: Notifier) -> bool:
    """Install :func:`on_sigterm` in front of SIGTERM's handler (in the main thread; a
    handler not set from Python is left alone).

    Returns:
        True when it was installed.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None:
        return False
    signal.signal(signal.SIGTERM, on_sigterm(notifier, previous))
    return True


class Gatewayish(Protocol):
    """What :class:`ServiceReadiness` reads of a gateway (``ryu_apps.unit.GatewayUnit``)."""

    @property
    def datapath(self) -> Any: ...

    @property
    def ready(self) -> bool: ...

    @property
    def standing_by(self) -> bool: ...


class ServiceReadiness:
    """The gateways' readiness as the service manager hears it.

    A gateway is ready once its switch is READY and has answered a configuration request
    sent after the pipeline and a barrier: the switch does everything before a barrier
    before anything after it, so the pipeline is then in its tables (the framework only
    queues what the app sends). The app asks only to tell a service manager, and for
    nothing else: no other configuration reply comes. A standby controller's gateway
    (``store = etcd``) is ready once its switch granted it the slave role: it installs
    nothing until it is master.

    Args:
        readiness: what the service manager is told.
    """

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness
        self._asked: dict[str, Any] = {}
        self._confirmed: dict[str, Any] = {}

    @classmethod
    def from_environment(cls, labels: Mapping[str, str]) -> ServiceReadiness:
        """From :data:`ENV`; with a socket there, SIGTERM sends ``STOPPING=1`` first."""
        notifier = Notifier.from_environment()
        if notifier.enabled:
            stopping_on_sigterm(notifier)
        return cls(Readiness(notifier, labels))

    @property
    def notifier(self) -> Notifier:
        """Where the lines go."""
        return self.readiness.notifier

    def tell(self, gateways: Mapping[str, Gatewayish]) -> None:
        """Ask each newly READY switch to confirm its pipeline; tell which gateways are
        ready (``STATUS=`` on a change, ``READY=1`` once all are); nothing without a
        socket."""
        if not self.notifier.enabled:
            return
        for name, unit in gateways.items():
            dp = unit.datapath
            if unit.standing_by:
                continue
            if not unit.ready:
                self._asked.pop(name, None)
                self._confirmed.pop(name, None)
            elif dp not in (self._confirmed.get(name), self._asked.get(name)):
                self._asked[name] = dp
                parser = dp.ofproto_parser
                dp.send_msg(parser.OFPBarrierRequest(dp))
                dp.send_msg(parser.OFPGetConfigRequest(dp))
        self.readiness.update({
            name: unit.standing_by or (unit.ready and self._confirmed.get(name) is unit.datapath)
            for name, unit in gateways.items()})

    def answered(self, dp: Any, gateways: Mapping[str, Gatewayish]) -> None:
        """Switch ``dp`` answered the configuration request: its pipeline is in."""
        for name, asked in self._asked.items():
            if asked is dp:
                self._confirmed[name] = dp
        self.tell(gateways)
