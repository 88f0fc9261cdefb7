"""The operator's view of the datapath's sessions (``ordinary_nat = conntrack``): REST's
sessions, session table and datapath status with the connection table's reader replaced
by a fixed reading, and ``topo.display sessions`` against a served API."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ryu_apps import nat_gateway, rest
from ryu_apps.conntrack_view import Connection, Table
from ryu_apps.nat_gateway import NatGateway
from tests.unit.app_env import CLIENT, OPTIONS, PUBLIC, SERVER
from tests.unit.pptp_flows import ControlLink
from tests.unit.test_gateway_app import Clock
from topo import display

ZONE = 5173
REPO = Path(__file__).resolve().parents[2]
UNREADABLE = Table(ZONE, reason="ovs-appctl is not installed")


def connection(host: int, port: int, public_port: int, proto: str = "tcp") -> Connection:
    return Connection(proto, IPv4Address(f"192.168.1.{host}"), port, PUBLIC, public_port,
                      SERVER, 8000, "ESTABLISHED" if proto == "tcp" else None, 30)


TABLE = Table(ZONE, (connection(1, 40000, 2037), connection(1, 40000, 1693, "udp"),
                     connection(2, 40001, 2914)))


def make_app(monkeypatch: pytest.MonkeyPatch, **options: Any) -> NatGateway:
    """The app (no switch: the views need none) with one PPTP control connection."""
    monkeypatch.setattr(nat_gateway, "CONF", SimpleNamespace(nat={**OPTIONS, **options}))
    monkeypatch.setattr(nat_gateway.hub, "spawn", lambda *_a, **_k: None)
    gateway = NatGateway()
    gateway.now = Clock()  # type: ignore[method-assign]
    ControlLink(gateway.core, CLIENT, 40100, SERVER, now=gateway.now()).start()
    return gateway


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> NatGateway:
    """The app with ``ordinary_nat = conntrack`` and one PPTP control connection."""
    return make_app(monkeypatch, ordinary_nat="conntrack", ct_zone=ZONE)


def get(app: NatGateway, reader: Callable[[], Table] | None, path: str, query: str = ""
        ) -> tuple[dict[str, str], Any]:
    """GET ``path`` through the app's router with ``reader``: headers, decoded body."""
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(headers))

    body = b"".join(rest.router(app, reader)({"REQUEST_METHOD": "GET", "PATH_INFO": path,
                                              "QUERY_STRING": query}, start_response))
    assert answer["status"] == "200 OK", body
    text = body.decode()
    return answer["headers"], text if "/display/" in path else json.loads(text)


def test_sessions_are_the_controllers_then_the_datapaths(app: NatGateway) -> None:
    headers, sessions = get(app, lambda: TABLE, "/pptp-alg/sessions")
    assert headers["X-Total-Count"] == "4" and "Link" not in headers
    control, *ordinary = sessions
    assert control["by"] == "controller" and control["pptp_control"]
    assert control["remote"] == "203.0.113.1:1723" and isinstance(control["id"], int)
    assert ordinary == [
        {"id": None, "proto": "tcp", "inside": "192.168.1.1:40000",
         "public": "203.0.113.2:2037", "remote": "203.0.113.1:8000", "pptp_control": False,
         "by": "datapath", "state": "ESTABLISHED", "left_seconds": 30},
        {"id": None, "proto": "udp", "inside": "192.168.1.1:40000",
         "public": "203.0.113.2:1693", "remote": "203.0.113.1:8000", "pptp_control": False,
         "by": "datapath", "state": None, "left_seconds": 30},
        {"id": None, "proto": "tcp", "inside": "192.168.1.2:40001",
         "public": "203.0.113.2:2914", "remote": "203.0.113.1:8000", "pptp_control": False,
         "by": "datapath", "state": "ESTABLISHED", "left_seconds": 30},
    ]


def test_pages_run_over_both_and_each_page_reads_once_while_fresh(app: NatGateway) -> None:
    readings = []

    def reader() -> Table:
        readings.append(1)
        return TABLE

    cached = rest.conntrack_view.Cached(reader, fresh=60.0)
    seen: list[str] = []
    path: str | None = "/pptp-alg/sessions?limit=3"
    while path is not None:
        route, _, query = path.partition("?")
        headers, page = get(app, cached, route, query)
        assert headers["X-Total-Count"] == "4"
        seen += [s["by"] + " " + s["inside"] for s in page]
        link = headers.get("Link")
        path = link[1:link.index(">")] if link else None
    assert seen == ["controller 192.168.1.1:40100", "datapath 192.168.1.1:40000",
                    "datapath 192.168.1.1:40000", "datapath 192.168.1.2:40001"]
    assert len(readings) == 1
    _, page = get(app, lambda: TABLE, "/pptp-alg/sessions", "offset=2&limit=1")
    assert [(s["proto"], s["public"]) for s in page] == [("udp", "203.0.113.2:1693")]
    _, page = get(app, lambda: TABLE, "/pptp-alg/sessions", "offset=9")
    assert page == []


def test_the_session_table_shows_them_in_the_seeds_layout(app: NatGateway) -> None:
    headers, text = get(app, lambda: TABLE, "/pptp-alg/display/session-table")
    lines = text.splitlines()
    assert headers["X-Total-Count"] == "4"
    assert lines[0].startswith("   pptp  VPN:public --> public 192.168.1.1:40100[")
    assert lines[1:] == [
        "   tcp  VPN:public --> public 192.168.1.1:40000[203.0.113.2:2037] --> "
        "203.0.113.1:8000",
        "   udp  VPN:public --> public 192.168.1.1:40000[203.0.113.2:1693] --> "
        "203.0.113.1:8000",
        "   tcp  VPN:public --> public 192.168.1.2:40001[203.0.113.2:2914] --> "
        "203.0.113.1:8000",
    ]
    _, text = get(app, lambda: TABLE, "/pptp-alg/display/session-table", "verbose=1")
    assert text.count("Left-Time: 00:00:30") == 3
    _, rows = get(app, lambda: TABLE, "/pptp-alg/session-table", "offset=3")
    assert [(r["protocol"], r["source_nat"]) for r in rows] == [("tcp", "203.0.113.2:2914")]


def test_a_table_that_cannot_be_read_is_said_plainly(app: NatGateway) -> None:
    headers, sessions = get(app, lambda: UNREADABLE, "/pptp-alg/sessions")
    assert [s["by"] for s in sessions] == ["controller"] and headers["X-Total-Count"] == "1"
    _, status = get(app, lambda: UNREADABLE, "/pptp-alg/datapath")
    assert status["ordinary_nat"] == "conntrack"
    assert status["datapath"]["available"] is False
    assert status["datapath"]["reason"] == "ovs-appctl is not installed"
    _, text = get(app, lambda: UNREADABLE, "/pptp-alg/display/session-table")
    assert text.splitlines()[-1] == ("the datapath's connection table cannot be read here: "
                                     "ovs-appctl is not installed")
    assert text.splitlines()[0].startswith("   pptp  VPN")
    _, first = get(app, lambda: UNREADABLE, "/pptp-alg/display/session-table", "limit=1")
    assert "cannot be read" in first  # the one page is the last
    _, status = get(app, lambda: TABLE, "/pptp-alg/datapath")
    assert status["datapath"] == {**TABLE.as_dict(), "available": True}
    assert status["datapath"]["connections"] == 3 and status["datapath"]["notice"] is None


def test_the_notice_is_on_the_last_page_only(app: NatGateway) -> None:
    table = Table(ZONE, TABLE.connections, malformed=2)
    _, first = get(app, lambda: table, "/pptp-alg/display/session-table", "limit=2")
    _, last = get(app, lambda: table, "/pptp-alg/display/session-table", "offset=2&limit=2")
    assert "could not be read" not in first
    assert last.splitlines()[-1] == ("2 line(s) of the datapath's connection table could "
                                     "not be read")


def test_with_the_controllers_nat_nothing_is_read_and_nothing_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(monkeypatch)
    assert rest.datapath_reader(app) is None
    _, sessions = get(app, None, "/pptp-alg/sessions")
    assert [(s["by"], s["pptp_control"]) for s in sessions] == [("controller", True)]
    assert set(sessions[0]) == {"id", "proto", "inside", "public", "remote", "pptp_control",
                                "by"}
    assert get(app, None, "/pptp-alg/datapath")[1] == {"ordinary_nat": "controller",
                                                       "datapath": None}
    _, text = get(app, None, "/pptp-alg/display/session-table")
    assert len(text.splitlines()) == 1


def test_the_app_reads_its_own_zone(app: NatGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def read(zone: int, **kwargs: Any) -> Table:
        asked.append((zone, kwargs["popen"], kwargs["wait"]))
        return TABLE

    monkeypatch.setattr(rest.conntrack_view, "read", read)
    reader = rest.datapath_reader(app)
    assert reader is not None and reader() is TABLE and reader() is TABLE
    assert asked == [(ZONE, rest.green_subprocess.Popen, rest._green_wait)]


# ------------------------------------------------------------------ the display tool

def test_the_display_tool_lists_who_made_each_session_and_the_notice() -> None:
    sessions = [
        {"id": 7, "proto": "tcp", "inside": "192.168.1.1:40100", "public": "203.0.113.2:1024",
         "remote": "203.0.113.1:1723", "pptp_control": True, "by": "controller"},
        {"id": None, "proto": "udp", "inside": "192.168.1.1:40000",
         "public": "203.0.113.2:1693", "remote": "203.0.113.1:8000", "pptp_control": False,
         "by": "datapath", "state": None, "left_seconds": 3725},
    ]
    text = display.render_sessions(sessions, {"datapath": UNREADABLE.as_dict()})
    assert text.splitlines() == [
        "by          proto  inside             public            remote            state"
        "         left",
        "controller  tcp    192.168.1.1:40100  203.0.113.2:1024  203.0.113.1:1723  "
        "pptp-control  -",
        "datapath    udp    192.168.1.1:40000  203.0.113.2:1693  203.0.113.1:8000  -"
        "             01:02:05",
        "the datapath's connection table cannot be read here: ovs-appctl is not installed",
    ]
    assert len(display.render_sessions([], {"datapath": None}).splitlines()) == 1


SERVE = """
import dataclasses, json, sys
from ryu_apps import http

ITEMS = json.loads(sys.argv[1])
NEXT = ("Link", '</pptp-alg/sessions?offset=1>; rel="next"')

def sessions(query):
    if query.get("offset"):
        return http.json_response(ITEMS[1:])
    return dataclasses.replace(http.json_response(ITEMS[:1]), headers=(NEXT,))

router = http.Router(None)
router.get("/pptp-alg/sessions", sessions)
router.get("/pptp-alg/datapath", lambda _q: http.json_response(
    {"ordinary_nat": "conntrack", "datapath": {"available": True, "notice": None}}))
sock = http.listen("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
http.serve(sock, router, 5.0)
"""


@pytest.fixture
def served() -> Iterator[str]:
    """An API answering two pages of sessions and the datapath's status; its address."""
    items = [{"by": b, "proto": "tcp", "inside": f"192.168.1.1:{p}", "public": "p",
              "remote": "r", "pptp_control": False} for b, p in (("controller", 1),
                                                                 ("datapath", 2))]
    proc = subprocess.Popen([sys.executable, "-c", SERVE, json.dumps(items)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_display_tool_follows_the_pages_of_sessions(
        served: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert display.main(["--rest", served, "sessions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[1:]] == [
        ["controller", "tcp", "192.168.1.1:1"], ["datapath", "tcp", "192.168.1.1:2"]]
