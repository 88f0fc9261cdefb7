"""The gateway's HTTP API, served without the controller framework's WSGI module.

Ryu and os-ken both run on eventlet, but only Ryu has a WSGI module; the gateway serves
its REST views and ``/metrics`` itself: a :class:`Router` (a WSGI application over the
standard library) on eventlet's WSGI server, in a green thread of the app
(:func:`listen`, then :func:`serve`). Only GET and HEAD are served; another method gets
405, an unknown path 404, a query a view cannot take 400, a view that raises 500
(logged), each with a JSON body ``{"error": ...}``.

**Slow clients.** Each request has one deadline for its whole life, from the wait for
its first byte through its headers to the last byte of its answer (``REQUEST_SECONDS``):
a client that trickles its request, or reads its answer slowly, loses its connection
then, whatever it still sends, so that it cannot hold one of the ``CONNECTIONS`` slots.

**Authentication.** With a token (``[nat] rest_token``), every request must carry
``Authorization: Bearer <token>`` (compared in constant time); any other gets 401, before
its path is looked at. A ``rest_host`` that is not a loopback address needs one (the
configuration refuses to start without it, ``alg.config``).
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import eventlet
import eventlet.wsgi

from alg.errors import AlgError, ConfigError, RequestError

LOG = logging.getLogger("pptp_alg.http")
CONNECTIONS = 32
"""Clients served at once; more wait in the listen queue."""
IDLE_SECONDS = 30.0
"""A connection that sends nothing this long is closed (a client cannot hold one open)."""
REQUEST_SECONDS = 10.0
"""The deadline of one request, from the wait for its first byte to the end of its answer
(a keep-alive connection's wait for its next request included)."""

Query = Mapping[str, list[str]]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class Response:
    """What a view answers."""

    body: bytes
    content_type: str = "application/json; charset=utf-8"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


View = Callable[[Query], Response]


def json_response(body: object, status: int = 200) -> Response:
    """A JSON response, indented by one."""
    return Response(json.dumps(body, indent=1).encode(), status=status)


def text_response(body: str) -> Response:
    """A plain-text response with a final newline."""
    return Response((body + "\n").encode(), "text/plain; charset=utf-8")


class Router:
    """A WSGI application that answers GETs of fixed paths with views.

    Args:
        token: the bearer token every request must carry (None: no authentication).
    """

    def __init__(self, token: str | None = None) -> None:
        self._views: dict[str, View] = {}
        self._expected = None if not token else f"Bearer {token}".encode()

    def get(self, path: str, view: View) -> None:
        """Serve GET (and HEAD) of ``path`` with ``view``."""
        self._views[path] = view

    def __call__(self, environ: Mapping[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "")) or "/"
        view = self._views.get(path)
        if not self._authorized(environ):
            response = json_response({"error": "a bearer token is required"}, 401)
        elif view is None:
            response = json_response({"error": f"no such path: {path}"}, 404)
        elif method not in ("GET", "HEAD"):
            response = json_response({"error": f"method {method} not allowed"}, 405)
        else:
            try:
                response = view(parse_qs(str(environ.get("QUERY_STRING", ""))))
            except RequestError as exc:
                response = json_response({"error": str(exc)}, 400)
            except Exception:
                LOG.exception("view of %s failed", path)
                response = json_response({"error": "internal error"}, 500)
        status = HTTPStatus(response.status)
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))), *response.headers]
        if status is HTTPStatus.METHOD_NOT_ALLOWED:
            headers.append(("Allow", "GET, HEAD"))
        if status is HTTPStatus.UNAUTHORIZED:
            headers.append(("WWW-Authenticate", 'Bearer realm="pptp-alg"'))
        start_response(f"{status.value} {status.phrase}", headers)
        return [b""] if method == "HEAD" else [response.body]

    def _authorized(self, environ: Mapping[str, Any]) -> bool:
        if self._expected is None:
            return True
        given = str(environ.get("HTTP_AUTHORIZATION", "")).encode("utf-8", "replace")
        return hmac.compare_digest(given, self._expected)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket of the HTTP API.

    Raises:
        ConfigError: naming ``nat.rest_host`` when the address is not the machine's,
            ``nat.rest_port`` when the port cannot be had.
    """
    try:
        sock: socket.socket = eventlet.listen((host, port))
    except OSError as exc:
        key = "nat.rest_host" if exc.errno == errno.EADDRNOTAVAIL else "nat.rest_port"
        raise ConfigError(key, f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                          ) from exc
    return sock


def serve(sock: socket.socket, app: Router, request_seconds: float = REQUEST_SECONDS
          ) -> None:
    """Serve ``app`` on ``sock`` until the process ends (run it in a green thread).

    Args:
        request_seconds: the deadline of each request (``REQUEST_SECONDS``).
    """
    protocol = type("Protocol", (_DeadlineProtocol,), {"request_seconds": request_seconds})
    eventlet.wsgi.server(sock, app, log=_WsgiLog(), log_output=False, debug=False,
                         max_size=CONNECTIONS, socket_timeout=IDLE_SECONDS,
                         protocol=protocol)


class _DeadlineError(AlgError):
    """A request's deadline passed."""


class _DeadlineProtocol(eventlet.wsgi.HttpProtocol):  # type: ignore[misc]
    """eventlet's HTTP protocol with one deadline for each request's whole life."""

    request_seconds = REQUEST_SECONDS

    def handle_one_request(self) -> None:
        timer = eventlet.Timeout(self.request_seconds, _DeadlineError())
        try:
            super().handle_one_request()
        except _DeadlineError:
            LOG.debug("HTTP client %s did not finish its request within %.0f s: closed",
                     self.client_address, self.request_seconds)
            self.close_connection = 1
        finally:
            timer.cancel()


class _WsgiLog:
    """eventlet's WSGI server writes its errors here: into the app's log."""

    def write(self, text: str) -> None:
        LOG.warning("%s", text.rstrip())

    def flush(self) -> None:
        """Nothing is buffered."""
