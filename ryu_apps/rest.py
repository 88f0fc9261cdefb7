"""The gateway's HTTP views: REST in JSON and text, and Prometheus metrics.

JSON: ``GET /pptp-alg/counters``, ``/pptp-alg/calls``, ``/pptp-alg/sessions``,
``/pptp-alg/session-table`` and ``/pptp-alg/server-map``. Text, in the seed's layout:
``GET /pptp-alg/display/session-table`` and ``/pptp-alg/display/server-map`` (add
``?verbose=1`` for packet and byte counts and the path each GRE direction takes).
Prometheus text format: ``GET /metrics`` (``ryu_apps.metrics``). Served by
``ryu_apps.http``, whichever controller framework runs the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alg import display
from alg.nat import Proto
from ryu_apps import metrics
from ryu_apps.http import Query, Response, Router, json_response, text_response

if TYPE_CHECKING:
    from ryu_apps.nat_gateway import NatGateway


def _verbose(query: Query) -> bool:
    return any(v.lower() in ("1", "true", "yes") for v in query.get("verbose", []))


def snapshot_counters(app: NatGateway) -> dict[str, Any]:
    """The core's and the shim's counters, plus derived gauges."""
    core = app.core
    gre: dict[str, dict[str, dict[str, int]]] = {}
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


def snapshot_calls(app: NatGateway) -> list[dict[str, Any]]:
    """Every live call with its Call IDs and data-path mode."""
    core = app.core
    out = []
    for call in core.calls():
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
            "slow_path_packets": call.slow_path_packets,
        })
    return out


def snapshot_sessions(app: NatGateway) -> list[dict[str, Any]]:
    """Every NAT session (the control connections included)."""
    core = app.core
    return [
        {
            "id": s.id,
            "proto": Proto(s.proto).name.lower(),
            "inside": f"{s.inside_ip}:{s.inside_port}",
            "public": f"{s.public_ip}:{s.public_port}",
            "remote": f"{s.remote_ip}:{s.remote_port}",
            "pptp_control": core.is_control_session(s.id),
        }
        for s in core.nat.sessions()
    ]


def router(app: NatGateway) -> Router:
    """Every view of the running ``app``, by path."""
    registry = metrics.registry(app)
    routes = Router()
    routes.get("/pptp-alg/counters", lambda _q: json_response(snapshot_counters(app)))
    routes.get("/pptp-alg/calls", lambda _q: json_response(snapshot_calls(app)))
    routes.get("/pptp-alg/sessions", lambda _q: json_response(snapshot_sessions(app)))
    routes.get("/pptp-alg/session-table", lambda _q: json_response(
        display.as_json(display.session_table(app.core, app.now()))))
    routes.get("/pptp-alg/server-map", lambda _q: json_response(
        display.as_json(display.server_map(app.core, app.now()))))
    routes.get("/pptp-alg/display/session-table", lambda q: text_response(
        display.render(display.session_table(app.core, app.now()), _verbose(q))))
    routes.get("/pptp-alg/display/server-map", lambda q: text_response(
        display.render(display.server_map(app.core, app.now()), _verbose(q))))
    routes.get("/metrics", lambda _q: Response(metrics.exposition(registry),
                                                metrics.CONTENT_TYPE))
    return routes
