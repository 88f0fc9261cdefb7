"""Print the gateway's display commands from a running controller, over its REST API.

    python -m topo.display [--rest http://127.0.0.1:8723] session-table [--verbose]
    python -m topo.display [--rest URL] server-map [--verbose]
    python -m topo.display [--rest URL] counters
    python -m topo.display [--rest URL] sessions
    python -m topo.display [--token TOKEN] ...
    python -m topo.display [--rest URL] counters --gateway NAME

``sessions`` lists the NAT sessions, the controller's and, with ``[nat] ordinary_nat =
conntrack``, those of the datapath's connection table (who made each, ``by``); when the
controller cannot read that table, the last line says so and why, as the session
table's does.

With ``[nat] rest_token`` set, the controller answers only requests that carry it as a
bearer token (``ryu_apps.http``): ``--token``, by default the environment variable
:data:`TOKEN_ENV` (which keeps it off the command line other users can read).
``python -m topo.lab display ...`` does the same for the lab's controller.

A controller that drives several gateways (``[gateway:NAME]`` sections) serves each
one's views under ``/pptp-alg/gateways/NAME/``: ``--gateway NAME`` reads those. Without
it, the views are read from ``/pptp-alg/...``, which only a controller of one gateway
answers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ryu_apps import switch

DEFAULT_REST = f"http://127.0.0.1:{switch.REST_PORT}"
VIEWS = ("session-table", "server-map", "counters", "sessions")
TOKEN_ENV = "PPTP_ALG_REST_TOKEN"
"""The environment variable ``--token`` defaults to."""


_NEXT = re.compile(r'<([^>]*)>;\s*rel="next"')
PREFIX = "/pptp-alg"
GATEWAY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
"""What a gateway's name looks like (``alg.config``), so that it can go in a path."""


def prefix(gateway: str | None = None) -> str:
    """The start of the REST paths of ``gateway``, or of the only gateway when None.

    Raises:
        ValueError: When ``gateway`` is not a gateway's name.
    """
    if gateway is None:
        return PREFIX
    if not GATEWAY_NAME.fullmatch(gateway):
        raise ValueError(f"{gateway!r} is not a gateway's name (1 to 32 of a-z, 0-9, _ "
                         f"and -, starting with a letter or digit)")
    return f"{PREFIX}/gateways/{gateway}"


def fetch(rest: str, path: str, timeout: float = 5.0, token: str | None = None) -> str:
    """GET ``path`` from the controller's REST API and return the body as text.

    Args:
        rest: the API's address.
        path: the path and query.
        timeout: seconds to wait for each answer.
        token: the bearer token the API asks for (None or empty: none sent).
    """
    return _get(rest, path, timeout, token)[0]


def _get(rest: str, path: str, timeout: float, token: str | None
         ) -> tuple[str, str | None]:
    """The body of ``path`` and the path of its next page, if any (``ryu_apps.rest``)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(rest.rstrip("/") + path, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        found = _NEXT.search(response.headers.get("Link", ""))
        return str(response.read().decode("utf-8")), found.group(1) if found else None


def fetch_pages(rest: str, path: str, timeout: float = 5.0, token: str | None = None
                ) -> str:
    """Every page of a paged text view, joined (``token`` as for :func:`fetch`)."""
    parts = []
    next_path: str | None = path
    while next_path is not None:
        body, next_path = _get(rest, next_path, timeout, token)
        parts.append(body.rstrip("\n"))
    return "\n".join(p for p in parts if p)


def fetch_json_pages(rest: str, path: str, timeout: float = 5.0, token: str | None = None
                     ) -> list[Any]:
    """Every page of a paged JSON view, one list (``token`` as for :func:`fetch`)."""
    items: list[Any] = []
    next_path: str | None = path
    while next_path is not None:
        body, next_path = _get(rest, next_path, timeout, token)
        items.extend(json.loads(body))
    return items


def _left(seconds: object) -> str:
    if not isinstance(seconds, int):
        return "-"
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def render_sessions(sessions: list[dict[str, Any]], status: dict[str, Any]) -> str:
    """The sessions as aligned columns (who made each, protocol, the three addresses,
    state and time left), then what ``status`` (``GET /pptp-alg/datapath``) says of the
    datapath's connection table, if anything."""
    rows = [("by", "proto", "inside", "public", "remote", "state", "left")]
    for s in sessions:
        state = s.get("state") or ("pptp-control" if s.get("pptp_control") else "-")
        rows.append((str(s.get("by", "controller")), str(s["proto"]), str(s["inside"]),
                     str(s["public"]), str(s["remote"]), str(state),
                     _left(s.get("left_seconds"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    datapath = status.get("datapath")
    if isinstance(datapath, dict) and datapath.get("notice"):
        lines.append(str(datapath["notice"]))
    return "\n".join(lines)


def render_counters(counters: dict[str, dict[str, int]]) -> str:
    """The counters as aligned ``name  value`` lines, ALG first, then the app's."""
    lines = []
    for group in ("alg", "app"):
        values = counters.get(group, {})
        width = max((len(k) for k in values), default=0)
        lines.append(f"{group}:")
        lines.extend(f"  {name:<{width}}  {value}" for name, value in values.items())
    return "\n".join(lines)


def show(rest: str, view: str, verbose: bool = False, token: str | None = None,
         gateway: str | None = None) -> str:
    """The text of one view, as the operator reads it (``token`` as for :func:`fetch`), of
    gateway ``gateway`` (None: the only one)."""
    base = prefix(gateway)
    if view == "counters":
        return render_counters(json.loads(fetch(rest, f"{base}/counters", token=token)))
    if view == "sessions":
        sessions = fetch_json_pages(rest, f"{base}/sessions", token=token)
        status = json.loads(fetch(rest, f"{base}/datapath", token=token))
        return render_sessions(sessions, status)
    suffix = "?verbose=1" if verbose else ""
    return fetch_pages(rest, f"{base}/display/{view}{suffix}", token=token)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The view, ``--verbose`` and ``--gateway`` arguments (shared with ``topo.lab
    display``)."""
    parser.add_argument("view", choices=VIEWS)
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="add packet and byte counts and the path of each GRE direction")
    parser.add_argument("--gateway", metavar="NAME",
                        help="the gateway of a controller of several, whose views are "
                             "under /pptp-alg/gateways/NAME/ (default: the only one)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; exit 1 when the controller cannot be reached."""
    parser = argparse.ArgumentParser(prog="python -m topo.display", description=__doc__)
    parser.add_argument("--rest", default=DEFAULT_REST, help=f"REST address ({DEFAULT_REST})")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"the API's bearer token, [nat] rest_token (default: ${TOKEN_ENV})")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        print(show(args.rest, args.view, args.verbose, args.token, args.gateway))
    except ValueError as exc:
        print(f"topo.display: {exc}", file=sys.stderr)
        return 1
    except urllib.error.HTTPError as exc:
        hint = f" (give --token or set {TOKEN_ENV})" if exc.code == 401 else ""
        print(f"topo.display: {args.rest} answered {exc.code} {exc.reason}{hint}",
              file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"topo.display: cannot reach {args.rest}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
