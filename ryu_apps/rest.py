"""The gateway's HTTP views: REST in JSON and text, and Prometheus metrics.

JSON: ``GET /pptp-alg/counters``, ``/pptp-alg/calls``, ``/pptp-alg/sessions``,
``/pptp-alg/session-table``, ``/pptp-alg/server-map`` and ``/pptp-alg/datapath``. Text,
in the seed's layout: ``GET /pptp-alg/display/session-table`` and
``/pptp-alg/display/server-map`` (add ``?verbose=1`` for packet and byte counts and the
path each GRE direction takes).
Prometheus text format: ``GET /metrics`` (``ryu_apps.metrics``). Served by
``ryu_apps.http``, whichever controller framework runs the app.

**Pages.** The views of calls, sessions, the session table and the server-map come in
pages, so that a view of many sessions takes the controller's one thread for a short
while (the views are built on it, since the core is not shared between threads):
``?offset=N&limit=M`` (``limit`` ``DEFAULT_PAGE`` by default, at most ``MAX_PAGE``) over
the calls (oldest first; the server-map's entries are theirs), the NAT sessions (by id,
then the datapath's connections), or, for the session table, the NAT sessions, the
ALG-off GRE bindings and the datapath's connections, each with the rows that follow it.
The answer's ``X-Total-Count`` header says how many there are, and a ``Link: <...>;
rel="next"`` header gives the next page while there is one. Pages taken one after
another may miss or repeat an item that came or went meanwhile.

**The datapath's sessions.** With ``ordinary_nat = conntrack`` the connection tracker
translates inside hosts' TCP and UDP and the controller has no NAT session for them: the
sessions view and the session table (JSON and text) show the connections of the
gateway's zone as the datapath's connection table has them (``ryu_apps.conntrack_view``,
read with eventlet's green subprocess and kept ``DATAPATH_FRESH`` seconds), after the
controller's items in the same pages. Each session says who made it: ``"by":
"controller"`` or ``"datapath"`` (which also has ``state`` and ``left_seconds``, and
``id`` null). ``GET /pptp-alg/datapath`` says whether the table could be read:
``{"ordinary_nat": ..., "datapath": {"available": false, "reason": ..., ...}}``
(``"datapath": null`` with ``ordinary_nat = controller``); the text session table ends
with the same words on its last page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from eventlet.green import select as green_select
from eventlet.green import subprocess as green_subprocess

from alg import display
from alg.errors import RequestError
from alg.nat import Proto
from alg.servermap import GrePath
from ryu_apps import conntrack_view, framework, metrics, stores
from ryu_apps.conntrack_view import Connection, Table
from ryu_apps.http import Query, Response, Router, View, json_response, text_response

if TYPE_CHECKING:
    from ryu_apps.nat_gateway import NatGateway
    from ryu_apps.unit import GatewayUnit


DEFAULT_PAGE = 1000
"""Items of a paged view when the request names no ``limit``."""
MAX_PAGE = 5000
"""The largest ``limit`` taken."""
DATAPATH_FRESH = 2.0
"""Seconds a reading of the datapath's connection table serves the views."""

T = TypeVar("T")


def page(query: Query) -> slice:
    """The ``offset`` and ``limit`` of a request, as a slice.

    Raises:
        RequestError: a value that is not a whole number in range.
    """
    offset = _whole(query, "offset", 0)
    limit = _whole(query, "limit", DEFAULT_PAGE)
    if not 1 <= limit <= MAX_PAGE:
        raise RequestError(f"limit must be in 1..{MAX_PAGE}, got {limit}")
    return slice(offset, offset + limit)


def _whole(query: Query, name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    text = values[-1]
    if not text.isdigit() or len(text) > 9:
        raise RequestError(f"{name} must be a whole number, got {text[:20]!r}")
    return int(text)


def paged(path: str, build: Callable[[slice, Query], Response], total: Callable[[], int]
          ) -> View:
    """A view of one page: ``build`` makes the page's answer, ``total`` counts the items
    paged over (``X-Total-Count``; a ``Link`` header names the next page, if any)."""
    def view(query: Query) -> Response:
        part = page(query)
        response = build(part, query)
        count = total()
        headers = [("X-Total-Count", str(count))]
        if part.stop < count:
            limit = part.stop - part.start
            more = "&verbose=1" if _verbose(query) else ""
            headers.append(("Link", f"<{path}?offset={part.stop}&limit={limit}{more}>; "
                                    'rel="next"'))
        return Response(response.body, response.content_type, response.status,
                        (*response.headers, *headers))
    return view


def _sorted(items: Sequence[T], key: Callable[[T], int], part: slice) -> list[T]:
    return sorted(items, key=key)[part]


def _verbose(query: Query) -> bool:
    return any(v.lower() in ("1", "true", "yes") for v in query.get("verbose", []))


def snapshot_counters(app: GatewayUnit) -> dict[str, Any]:
    """The core's and the shim's counters, plus derived gauges."""
    core = app.core
    gre: dict[GrePath, dict[str, dict[str, int]]] = {}
    for (path, direction), (packets, octets) in core.server_map.traffic().items():
        gre.setdefault(path, {})[direction] = {"packets": packets, "bytes": octets}
    return {
        "alg": {**core.counters.as_dict(), "calls_in_progress": core.calls_in_progress},
        "app": app.counters.as_dict(),
        "switch": {"flow_entries": app.flow_entries},
        "gre": gre,
        "neighbours": app.neighbours.counters.as_dict(),
        "demux": {**app.demux.counters.as_dict(), "up": app.demux.up,
                  "program": app.demux.program_counts()},
    }


def snapshot_calls(app: GatewayUnit, part: slice = slice(None)) -> list[dict[str, Any]]:
    """The live calls (``part`` of them, oldest first) with their Call IDs and data-path
    mode."""
    core = app.core
    out = []
    for call in _sorted(list(core.calls()), lambda c: c.index, part):
        conn = call.conn
        up, down = core.gre_flow_packets(call)
        out.append({
            "index": call.index,
            "state": call.state.value,
            "direction": "outgoing" if call.outgoing else "incoming",
            "client": str(conn.client_ip),
            "public": str(conn.public_ip),
            "server": str(conn.server_ip),
            "client_call_id": call.client_call_id,
            "public_call_id": call.public_call_id,
            "server_call_id": call.server_call_id,
            "call_serial_number": call.call_serial_number,
            "inbound_gre_path": display.gre_paths(core, call)[1],
            "outbound_entry_packets": up,
            "inbound_entry_packets": down,
            "controller_path_packets": call.controller_path_packets,
        })
    return out


def snapshot_sessions(app: GatewayUnit, part: slice = slice(None),
                      datapath: Table | None = None) -> list[dict[str, Any]]:
    """The NAT sessions (``part`` of them: the controller's by id, the control connections
    included, then the connections of ``datapath``, the connection table's reading)."""
    core = app.core
    sessions = sorted(core.nat.sessions(), key=lambda s: s.id)
    connections = datapath.connections if datapath is not None else ()
    start, stop, _ = part.indices(len(sessions) + len(connections))
    mine = len(sessions)
    return [
        {
            "id": s.id,
            "proto": Proto(s.proto).name.lower(),
            "inside": f"{s.inside_ip}:{s.inside_port}",
            "public": f"{s.public_ip}:{s.public_port}",
            "remote": f"{s.remote_ip}:{s.remote_port}",
            "pptp_control": core.is_control_session(s.id),
            "by": "controller",
        }
        for s in sessions[start:stop]
    ] + [_datapath_session(c) for c in connections[max(0, start - mine):max(0, stop - mine)]]


def _datapath_session(c: Connection) -> dict[str, Any]:
    return {
        "id": None,
        "proto": c.proto,
        "inside": f"{c.inside_ip}:{c.inside_port}",
        "public": f"{c.public_ip}:{c.public_port}",
        "remote": f"{c.remote_ip}:{c.remote_port}",
        "pptp_control": False,
        "by": "datapath",
        "state": c.state,
        "left_seconds": c.left_seconds,
    }


def session_table(app: GatewayUnit, part: slice = slice(None),
                  datapath: Table | None = None) -> list[display.SessionEntry]:
    """The session table's rows (``part`` of its items: ``display.session_table``'s,
    then the connections of ``datapath``), in the seed's layout."""
    core = app.core
    size = display.session_table_size(core)
    connections = datapath.connections if datapath is not None else ()
    start, stop, _ = part.indices(size + len(connections))
    rows = display.session_table(core, app.now(), slice(start, stop))
    rows += [display.SessionEntry(
        protocol=c.proto, source=f"{c.inside_ip}:{c.inside_port}",
        source_nat=f"{c.public_ip}:{c.public_port}",
        destination=f"{c.remote_ip}:{c.remote_port}", destination_nat="", inspected=False,
        left_seconds=c.left_seconds or 0,
    ) for c in connections[max(0, start - size):max(0, stop - size)]]
    return rows


def _green_wait(fds: Sequence[int], seconds: float) -> list[int]:
    ready: list[int] = green_select.select(list(fds), [], [], seconds)[0]
    return ready


def datapath_reader(app: GatewayUnit) -> Callable[[], Table] | None:
    """The reader of the gateway's zone in the datapath's connection table (green, each
    reading kept ``DATAPATH_FRESH`` seconds); None with ``ordinary_nat = controller``."""
    alg = app.config.alg
    if alg.ordinary_nat != "conntrack":
        return None
    zone = alg.ct_zone
    return conntrack_view.Cached(lambda: conntrack_view.read(
        zone, popen=green_subprocess.Popen, wait=_green_wait), DATAPATH_FRESH)


def router(app: NatGateway, datapath: Callable[[], Table] | None = None) -> Router:
    """Every view of the running ``app``, by path: each gateway's under
    ``/pptp-alg/gateways/NAME``, the only one's also under ``/pptp-alg`` (with several,
    those paths answer 404 naming them), ``/pptp-alg/gateways`` and ``/metrics``.

    Args:
        datapath: reads the first gateway's zone of the datapath's connection table
            (:func:`datapath_reader` of each gateway by default).
    """
    gateways = app.gateways
    registry = metrics.registry(gateways, app.process_counters,
                                metrics.build_info(framework.NAME))
    routes = Router(app.config.rest_token or None)
    for name, unit in gateways.items():
        read = datapath if datapath is not None and unit is app.unit else datapath_reader(unit)
        prefixes = [f"{GATEWAYS}/{name}"] + (["/pptp-alg"] if len(gateways) == 1 else [])
        for prefix in prefixes:
            _gateway_views(routes, prefix, unit, read)
    if len(gateways) > 1:
        several = json_response({"error": f"several gateways ({', '.join(gateways)}): ask "
                                          f"{GATEWAYS}/NAME/..."}, 404)
        for suffix in VIEWS:
            routes.get(f"/pptp-alg{suffix}", lambda _q: several)
    routes.get(GATEWAYS, lambda _q: json_response(snapshot_gateways(app)))
    routes.get("/metrics", lambda _q: Response(metrics.exposition(registry),
                                                metrics.CONTENT_TYPE))
    return routes


GATEWAYS = "/pptp-alg/gateways"
VIEWS = ("/counters", "/datapath", "/calls", "/sessions", "/session-table", "/server-map",
         "/display/session-table", "/display/server-map")
"""Each gateway's views, after its prefix."""


def snapshot_gateways(app: NatGateway) -> dict[str, Any]:
    """The gateways, their switches, this controller's role for each (``single``
    without an election), and the switches no gateway binds."""
    config = app.config
    return {
        "controller_id": stores.controller_id(config),
        "store": config.store,
        "gateways": [{
            "name": name,
            "bridge": unit.switch.bridge or unit.config.bridge or None,
            "datapath_id": (f"{unit.datapath.id:016x}" if unit.datapath is not None
                            else f"{unit.config.datapath_id:016x}"
                            if unit.config.datapath_id is not None else None),
            "connected": unit.datapath is not None,
            "ready": unit.ready,
            "role": unit.role,
        } for name, unit in app.gateways.items()],
        **app.process_counters.as_dict(),
    }


def _gateway_views(routes: Router, prefix: str, app: GatewayUnit,
                   read: Callable[[], Table] | None) -> None:
    """One gateway's views under ``prefix``."""
    core = app.core

    def table_now() -> Table | None:
        return read() if read is not None else None

    def in_datapath() -> int:
        table = table_now()
        return len(table.connections) if table is not None else 0

    def calls() -> int:
        return sum(len(c.calls) for c in core.connections())

    def sessions() -> int:
        return len(core.nat) + in_datapath()

    def table() -> int:
        return display.session_table_size(core) + in_datapath()

    def table_text(part: slice, query: Query) -> Response:
        datapath_now = table_now()
        text = display.render(session_table(app, part, datapath_now), _verbose(query))
        notice = datapath_now.notice if datapath_now is not None else None
        if notice is not None and part.stop >= table():
            text = f"{text}\n{notice}" if text else notice
        return text_response(text)

    def status(_query: Query) -> Response:
        datapath_now = table_now()
        return json_response({
            "ordinary_nat": app.config.alg.ordinary_nat,
            "datapath": datapath_now.as_dict() if datapath_now is not None else None,
        })

    views: dict[str, tuple[Callable[[slice, Query], Response], Callable[[], int]]] = {
        "/calls": (lambda p, _q: json_response(snapshot_calls(app, p)), calls),
        "/sessions": (lambda p, _q: json_response(
            snapshot_sessions(app, p, table_now())), sessions),
        "/session-table": (lambda p, _q: json_response(
            display.as_json(session_table(app, p, table_now()))), table),
        "/server-map": (lambda p, _q: json_response(
            display.as_json(display.server_map(core, app.now(), p))), calls),
        "/display/session-table": (table_text, table),
        "/display/server-map": (lambda p, q: text_response(display.render(
            display.server_map(core, app.now(), p), _verbose(q))), calls),
    }
    routes.get(f"{prefix}/counters", lambda _q: json_response(snapshot_counters(app)))
    routes.get(f"{prefix}/datapath", status)
    for suffix, (build, total) in views.items():
        routes.get(f"{prefix}{suffix}", paged(f"{prefix}{suffix}", build, total))
