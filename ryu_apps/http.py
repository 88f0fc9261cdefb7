"""The gateway's HTTP API, served without the controller framework's WSGI module.

Ryu and os-ken both run on eventlet, but only Ryu has a WSGI module; the gateway serves
its REST views and ``/metrics`` itself: a :class:`Router` (a WSGI application over the
standard library) on eventlet's WSGI server, in a green thread of the app
(:func:`listen`, then :func:`serve`). Only GET and HEAD are served; another method gets
405, an unknown path 404, a view that raises 500 (logged), each with a JSON body
``{"error": ...}``.
"""

from __future__ import annotations

import errno
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

from alg.errors import ConfigError

LOG = logging.getLogger("pptp_alg.http")
CONNECTIONS = 32
"""Clients served at once; more wait in the listen queue."""
IDLE_SECONDS = 30.0
"""A connection that sends nothing this long is closed (a client cannot hold one open)."""

Query = Mapping[str, list[str]]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class Response:
    """What a view answers."""

    body: bytes
    content_type: str = "application/json; charset=utf-8"
    status: int = 200


View = Callable[[Query], Response]


def json_response(body: object, status: int = 200) -> Response:
    """A JSON response, indented by one."""
    return Response(json.dumps(body, indent=1).encode(), status=status)


def text_response(body: str) -> Response:
    """A plain-text response with a final newline."""
    return Response((body + "\n").encode(), "text/plain; charset=utf-8")


class Router:
    """A WSGI application that answers GETs of fixed paths with views."""

    def __init__(self) -> None:
        self._views: dict[str, View] = {}

    def get(self, path: str, view: View) -> None:
        """Serve GET (and HEAD) of ``path`` with ``view``."""
        self._views[path] = view

    def __call__(self, environ: Mapping[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "")) or "/"
        view = self._views.get(path)
        if view is None:
            response = json_response({"error": f"no such path: {path}"}, 404)
        elif method not in ("GET", "HEAD"):
            response = json_response({"error": f"method {method} not allowed"}, 405)
        else:
            try:
                response = view(parse_qs(str(environ.get("QUERY_STRING", ""))))
            except Exception:
                LOG.exception("view of %s failed", path)
                response = json_response({"error": "internal error"}, 500)
        status = HTTPStatus(response.status)
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body)))]
        if status is HTTPStatus.METHOD_NOT_ALLOWED:
            headers.append(("Allow", "GET, HEAD"))
        start_response(f"{status.value} {status.phrase}", headers)
        return [b""] if method == "HEAD" else [response.body]


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


def serve(sock: socket.socket, app: Router) -> None:
    """Serve ``app`` on ``sock`` until the process ends (run it in a green thread)."""
    eventlet.wsgi.server(sock, app, log=_WsgiLog(), log_output=False, debug=False,
                         max_size=CONNECTIONS, socket_timeout=IDLE_SECONDS)


class _WsgiLog:
    """eventlet's WSGI server writes its errors here: into the app's log."""

    def write(self, text: str) -> None:
        LOG.warning("%s", text.rstrip())

    def flush(self) -> None:
        """Nothing is buffered."""
