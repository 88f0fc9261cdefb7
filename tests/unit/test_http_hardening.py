"""The HTTP API against slow clients, strangers and large views.

The slow clients play against the real server (``ryu_apps.http.serve`` on eventlet, in a
process of its own) on a loopback socket, bounded in count and time; the views run
through the app's router.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from alg.config import load
from alg.errors import ConfigError
from alg.events import Direction
from ryu_apps import http, rest
from ryu_apps.nat_gateway import NatGateway
from tests.unit.app_env import OPTIONS, SERVER
from tests.unit.test_gateway_app import Clock, app, clock, dp, get  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 1.0
"""The request deadline the served process gets (seconds)."""
TOKEN = "s3cret-token-of-20ch"
SERVE = """
import sys
from ryu_apps import http
router = http.Router(sys.argv[2] or None)
router.get("/x", lambda _q: http.json_response({"ok": True}))
sock = http.listen("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
http.serve(sock, router, float(sys.argv[1]))
"""


@pytest.fixture
def server() -> Iterator[int]:
    """The HTTP server in a process of its own, with a deadline of ``DEADLINE``; its port."""
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(DEADLINE), TOKEN], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def request(port: int, headers: str = "", timeout: float = 5.0) -> bytes:
    """One whole GET of ``/x``, sent at once; the answer's bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET /x HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"
                     .encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


def trickle_until_closed(sock: socket.socket, limit: float) -> float:
    """Send a request's header lines one by one, 0.1 s apart, never ending them; the
    seconds until the server closed the connection (``limit`` if it did not)."""
    start = time.monotonic()
    sock.sendall(b"GET /x HTTP/1.1\r\n")
    sock.settimeout(0.1)
    line = 0
    while time.monotonic() - start < limit:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except TimeoutError:
            pass
        except ConnectionError:
            return time.monotonic() - start
        try:
            sock.sendall(f"X-Slow-{line}: a\r\n".encode())
        except OSError:
            return time.monotonic() - start
        line += 1
    return limit


def test_a_client_trickling_its_headers_loses_its_connection_at_the_deadline(
    server: int,
) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        held = trickle_until_closed(sock, limit=6 * DEADLINE)
    assert DEADLINE * 0.8 <= held < 3 * DEADLINE


def test_slow_clients_on_every_slot_keep_no_one_else_out(server: int) -> None:
    slow = [socket.create_connection(("127.0.0.1", server), timeout=5)
            for _ in range(http.CONNECTIONS)]
    try:
        for sock in slow:
            sock.sendall(b"GET /x HTTP/1.1\r\nX-Slow: a\r\n")
        time.sleep(0.2)
        start = time.monotonic()
        answer = request(server, f"Authorization: Bearer {TOKEN}\r\n", timeout=6 * DEADLINE)
        waited = time.monotonic() - start
    finally:
        for sock in slow:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert waited < 3 * DEADLINE


def test_a_request_without_the_token_or_with_a_wrong_one_gets_401(server: int) -> None:
    for headers in ("", "Authorization: Bearer wrong\r\n",
                    f"Authorization: Bearer {TOKEN}x\r\n", f"Authorization: {TOKEN}\r\n"):
        answer = request(server, headers)
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert b'www-authenticate: bearer realm="pptp-alg"' in answer.lower()
        assert b'"ok"' not in answer
    assert request(server, f"Authorization: Bearer {TOKEN}\r\n").startswith(b"HTTP/1.1 200")


def test_an_unknown_path_without_the_token_is_not_told_apart() -> None:
    router = http.Router(TOKEN)
    router.get("/x", lambda _q: http.json_response({}))
    statuses = []
    for path in ("/x", "/nothing"):
        router({"REQUEST_METHOD": "GET", "PATH_INFO": path},
               lambda status, _h: statuses.append(status))
    assert statuses == ["401 Unauthorized", "401 Unauthorized"]


def test_a_rest_host_off_loopback_needs_a_token() -> None:
    base = {**OPTIONS, "rest_port": 8080}
    with pytest.raises(ConfigError, match=r"^nat\.rest_token: missing: .*192\.0\.2\.9"):
        load({**base, "rest_host": "192.0.2.9"})
    with pytest.raises(ConfigError, match=r"^nat\.rest_token: missing"):
        load({**base, "rest_host": "0.0.0.0"})
    with pytest.raises(ConfigError, match=r"^nat\.rest_token: must be at least 16"):
        load({**base, "rest_host": "192.0.2.9", "rest_token": "short"})
    with pytest.raises(ConfigError, match=r"^nat\.rest_token: must be"):
        load({**base, "rest_token": "has a space in it, 16+"})
    assert load({**base, "rest_host": "192.0.2.9", "rest_token": TOKEN}).rest_token == TOKEN
    assert load({**base, "rest_host": "127.0.0.2"}).rest_token == ""
    assert load({**base, "rest_host": "192.0.2.9", "rest_port": 0}).rest_port == 0
    assert TOKEN not in repr(load({**base, "rest_token": TOKEN}))


# Large views.

SESSIONS = 64_000


def fill(gateway: NatGateway, now: float) -> None:
    """``SESSIONS`` UDP sessions from 16 inside hosts."""
    per_host = SESSIONS // 16
    for host in range(16):
        inside = IPv4Address("192.168.1.1") + host
        for port in range(1024, 1024 + per_host):
            out = gateway.core.handle_udp(Direction.OUTBOUND, inside, port, SERVER, 53, now)
            assert out.drop_reason is None
    assert len(gateway.core.nat) == SESSIONS


def test_a_view_of_64000_sessions_comes_in_pages(app: NatGateway, clock: Clock) -> None:  # noqa: F811
    fill(app, clock.now)
    for path in ("/pptp-alg/sessions", "/pptp-alg/session-table",
                 "/pptp-alg/display/session-table"):
        start = time.process_time()  # this process's CPU: other load does not count
        status, headers, body = get(app, path)
        took = time.process_time() - start
        assert status == "200 OK"
        assert headers["X-Total-Count"] == str(SESSIONS)
        assert headers["Link"] == f'<{path}?offset={rest.DEFAULT_PAGE}&limit=' \
                                  f'{rest.DEFAULT_PAGE}>; rel="next"'
        shown = (len(json.loads(body)) if not path.startswith("/pptp-alg/display")
                 else body.decode().count("udp  VPN"))
        assert shown == rest.DEFAULT_PAGE
        assert took < 0.5, f"{path}: {took:.2f} s of CPU"
    seen: list[int] = []
    offset = 0
    while True:
        _, headers, body = get(app, "/pptp-alg/sessions",
                               f"offset={offset}&limit={rest.MAX_PAGE}")
        seen += [s["id"] for s in json.loads(body)]
        if "Link" not in headers:
            break
        offset += rest.MAX_PAGE
    assert seen == sorted({s.id for s in app.core.nat.sessions()})


@pytest.mark.parametrize("query", ["limit=0", f"limit={rest.MAX_PAGE + 1}", "offset=-1",
                                   "limit=ten", "offset=1e9"])
def test_a_page_out_of_range_gets_400(app: NatGateway, query: str) -> None:  # noqa: F811
    status, _, body = get(app, "/pptp-alg/sessions", query)
    assert status == "400 Bad Request"
    assert "error" in json.loads(body)


def test_the_last_page_has_no_link_and_pages_keep_verbose(app: NatGateway, clock: Clock  # noqa: F811
                                                          ) -> None:
    for port in range(1024, 1029):
        app.core.handle_udp(Direction.OUTBOUND, IPv4Address("192.168.1.1"), port, SERVER, 53,
                            clock.now)
    status, headers, _ = get(app, "/pptp-alg/display/session-table", "limit=2&verbose=1")
    assert status == "200 OK" and headers["X-Total-Count"] == "5"
    assert headers["Link"] == ('</pptp-alg/display/session-table?offset=2&limit=2&verbose=1>; '
                               'rel="next"')
    _, headers, body = get(app, "/pptp-alg/display/session-table", "offset=4&limit=2")
    assert "Link" not in headers and body.decode().count("udp  VPN") == 1


def test_the_display_tool_follows_the_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    from topo import display as tool

    pages = {
        "/pptp-alg/display/session-table": ("a\nb\n", '</p2?offset=2&limit=2>; rel="next"'),
        "/p2?offset=2&limit=2": ("c\n", ""),
    }
    asked: list[str] = []

    class Answer:
        def __init__(self, url: str) -> None:
            path = url.removeprefix("http://gw")
            asked.append(path)
            self.body, link = pages[path]
            self.headers = {"Link": link} if link else {}

        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *_exc: object) -> None:
            return None

        def read(self) -> bytes:
            return self.body.encode()

    monkeypatch.setattr(tool.urllib.request, "urlopen",
                        lambda request, timeout: Answer(request.full_url))
    assert tool.show("http://gw", "session-table") == "a\nb\nc"
    assert asked == ["/pptp-alg/display/session-table", "/p2?offset=2&limit=2"]
