"""The gateway's REST API, served the Ryu WSGI way (``ryu.app.wsgi``).

JSON: ``GET /pptp-alg/counters``, ``/pptp-alg/calls``, ``/pptp-alg/sessions``,
``/pptp-alg/session-table`` and ``/pptp-alg/server-map``. Text, in the seed's layout:
``GET /pptp-alg/display/session-table`` and ``/pptp-alg/display/server-map`` (add
``?verbose=1`` for packet and byte counts and the path each GRE direction takes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ryu.app.wsgi import ControllerBase, Response, route

from alg import display
from alg.nat import Proto

if TYPE_CHECKING:
    from ryu_apps.nat_gateway import NatGateway

APP_KEY = "pptp_alg_gateway"
Handler = Callable[..., Response]


def _get(path: str) -> Callable[[Handler], Handler]:
    """Ryu's ``route`` for a GET of ``path``, typed."""
    return cast(Callable[[Handler], Handler], route("pptp_alg", path, methods=["GET"]))


def register_rest(wsgi: Any, app: NatGateway) -> None:
    """Mount the REST controller on Ryu's WSGI application."""
    wsgi.register(GatewayRest, {APP_KEY: app})


def _text(body: str) -> Response:
    return Response(content_type="text/plain", charset="utf-8", body=body + "\n")


def _verbose(req: Any) -> bool:
    return str(req.GET.get("verbose", "")).lower() in ("1", "true", "yes")


def _json(body: object) -> Response:
    return Response(
        content_type="application/json", charset="utf-8", body=json.dumps(body, indent=1)
    )


def snapshot_counters(app: NatGateway) -> dict[str, Any]:
    """The core's and the shim's counters, plus derived gauges."""
    core = app.core
    return {
        "alg": {**core.counters.as_dict(), "calls_in_progress": core.calls_in_progress},
        "app": app.counters.as_dict(),
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


class GatewayRest(ControllerBase):  # type: ignore[misc]
    """REST endpoints over the running gateway."""

    def __init__(self, req: Any, link: Any, data: dict[str, Any], **config: Any) -> None:
        super().__init__(req, link, data, **config)
        self.app: NatGateway = data[APP_KEY]

    @_get("/pptp-alg/counters")
    def counters(self, req: Any, **kwargs: Any) -> Response:
        """Counters of the ALG and of the app."""
        return _json(snapshot_counters(self.app))

    @_get("/pptp-alg/calls")
    def calls(self, req: Any, **kwargs: Any) -> Response:
        """The live calls."""
        return _json(snapshot_calls(self.app))

    @_get("/pptp-alg/sessions")
    def sessions(self, req: Any, **kwargs: Any) -> Response:
        """The NAT sessions."""
        return _json(snapshot_sessions(self.app))

    @_get("/pptp-alg/session-table")
    def session_table(self, req: Any, **kwargs: Any) -> Response:
        """The session table as JSON."""
        return _json(display.as_json(display.session_table(self.app.core, self.app.now())))

    @_get("/pptp-alg/server-map")
    def server_map(self, req: Any, **kwargs: Any) -> Response:
        """The server-map as JSON."""
        return _json(display.as_json(display.server_map(self.app.core, self.app.now())))

    @_get("/pptp-alg/display/session-table")
    def display_session_table(self, req: Any, **kwargs: Any) -> Response:
        """``display firewall session-table``."""
        entries = display.session_table(self.app.core, self.app.now())
        return _text(display.render(entries, _verbose(req)))

    @_get("/pptp-alg/display/server-map")
    def display_server_map(self, req: Any, **kwargs: Any) -> Response:
        """``display firewall server-map``."""
        entries = display.server_map(self.app.core, self.app.now())
        return _text(display.render(entries, _verbose(req)))
