"""The operator's view: the seed's ``display firewall session-table`` and
``display firewall server-map``, built from the live state of a :class:`Gateway`.

Notation as in the seed: ``X[Y]`` is the address (and port, or Call ID for GRE) as the
packet carries it on arrival, translated to ``Y``; ``+->`` marks the control session the
ALG inspects, ``-->`` an ordinary one; Left-Time is the time before an idle entry ages
out. Call IDs are decimal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from alg.calls import Call, CallState
from alg.engine import Gateway
from alg.nat import Proto
from alg.servermap import GrePath

VPN = "VPN:public --> public"


def left_time(seconds: float) -> str:
    """``HH:MM:SS`` of a non-negative number of seconds (rounded down)."""
    total = max(0, int(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


@dataclass(frozen=True)
class SessionEntry:
    """One line of the session table.

    Attributes:
        protocol: ``pptp`` (the inspected control connection), ``pptp-gre``, ``tcp``,
            ``udp``, ``icmp`` or ``gre`` (ALG off).
        source: the source as it arrives; ``source_nat``: what it becomes (or "").
        destination: the destination as it arrives; ``destination_nat``: what it becomes.
        inspected: True for the control connection the ALG reads (``+->``).
        left_seconds: seconds before the entry ages out when idle.
        packets: packets counted for the entry, when known; ``bytes``: their bytes
            (Ethernet frames, as the switch counts them).
        path: for GRE, ``flow`` (the switch carries it), ``demux`` (the GRE
            demultiplexer) or ``controller``; ``controller`` for a control connection
            and ICMP echo.
    """

    protocol: str
    source: str
    source_nat: str
    destination: str
    destination_nat: str
    inspected: bool
    left_seconds: int
    packets: int | None = None
    bytes: int | None = None
    path: GrePath | None = None

    def render(self, verbose: bool = False) -> str:
        """The entry in the seed's layout (plus counters and path when verbose)."""
        src = self.source + (f"[{self.source_nat}]" if self.source_nat else "")
        dst = self.destination + (f"[{self.destination_nat}]" if self.destination_nat else "")
        arrow = "+->" if self.inspected else "-->"
        line = f"   {self.protocol}  {VPN} {src} {arrow} {dst}"
        if verbose:
            extra = [f"Left-Time: {left_time(self.left_seconds)}"]
            if self.packets is not None:
                extra.append(f"Packets: {self.packets}, Bytes: {self.bytes or 0}")
            if self.path is not None:
                extra.append(f"Path: {self.path}")
            line += "\n      " + ", ".join(extra)
        return line


@dataclass(frozen=True)
class ServerMapEntry:
    """One server-map entry of a call (each call has two).

    Attributes:
        direction: ``server-to-client`` (the inbound entry, made by the Outgoing-Call-Request
            or Incoming-Call-Reply) or ``client-to-server`` (the outbound entry, made by the
            reply that names the server's Call ID).
        text: the ``Type: ASPF, ...`` line without the ``Zone`` suffix.
        call_index: the call's index in the gateway (logs name it too).
        client, public, server: the three addresses; ``client_call_id`` (a),
            ``public_call_id`` (b), ``server_call_id`` (c).
        left_seconds: seconds before the entry ages out if no data flows.
        path: ``flow``, ``demux`` or ``controller`` once the data channel is open, else
            None.
        packets: packets the switch or the controller carried for this direction;
            ``bytes``: their bytes (Ethernet frames).
    """

    direction: str
    text: str
    call_index: int
    client: str
    public: str
    server: str
    client_call_id: int
    public_call_id: int
    server_call_id: int | None
    left_seconds: int
    path: GrePath | None
    packets: int
    bytes: int

    def render(self, verbose: bool = False) -> str:
        """The entry in the seed's three-line layout (plus path and counts when verbose)."""
        lines = [
            f"Type: ASPF, {self.text}, Zone: ---",
            f"   Protocol: tcp(Appro: pptp-gre), Left-Time: {left_time(self.left_seconds)}",
            "   VPN: public -> public",
        ]
        if verbose:
            lines.append(
                f"   Path: {self.path or 'not open'}, Packets: {self.packets}, "
                f"Bytes: {self.bytes}"
            )
        return "\n".join(lines)


def gre_paths(gateway: Gateway, call: Call) -> tuple[GrePath | None, GrePath | None]:
    """How a call's GRE travels (client -> server, server -> client), None if not open."""
    if call.state is not CallState.ESTABLISHED:
        return None, None
    conn = call.conn
    outbound = GrePath.CONTROLLER if gateway.config.gre_outbound_strict else GrePath.FLOW
    return outbound, gateway.inbound_gre_path(conn.server_ip, conn.public_ip)


_ALL = slice(None)


def server_map(gateway: Gateway, now: float, page: slice = _ALL) -> list[ServerMapEntry]:
    """Every call's server-map entries, oldest call first.

    A call whose data channel aged out has none until its next GRE packet (the call
    itself lives on with its control connection, see ``alg.servermap``).

    Args:
        page: which of the calls, oldest first, to show (all by default).
    """
    entries = []
    idle = gateway.config.gre_idle
    for call in sorted(gateway.calls(), key=lambda c: c.index)[page]:
        if call.client_call_id is None or call.public_call_id is None or call.data_idle:
            continue
        conn = call.conn
        left = int(idle - (now - call.last_data))
        up_path, down_path = gre_paths(gateway, call)
        (up_packets, up_bytes), (down_packets, down_bytes) = gateway.gre_counts(call)
        client, public, server = str(conn.client_ip), str(conn.public_ip), str(conn.server_ip)
        common: dict[str, Any] = {
            "call_index": call.index, "client": client, "public": public, "server": server,
            "client_call_id": call.client_call_id, "public_call_id": call.public_call_id,
            "server_call_id": call.server_call_id, "left_seconds": left,
        }
        entries.append(ServerMapEntry(
            direction="server-to-client",
            text=f"{server}:0 -> {public}:{call.public_call_id}[{client}:{call.client_call_id}]",
            path=down_path, packets=down_packets + call.inbound_packets,
            bytes=down_bytes + call.inbound_bytes, **common,
        ))
        if call.server_call_id is not None and call.state is CallState.ESTABLISHED:
            entries.append(ServerMapEntry(
                direction="client-to-server",
                text=f"{client}:0[{public}] -> {server}:{call.server_call_id}",
                path=up_path, packets=up_packets + call.outbound_packets,
                bytes=up_bytes + call.outbound_bytes, **common,
            ))
    return entries


def session_table(gateway: Gateway, now: float, page: slice = _ALL) -> list[SessionEntry]:
    """The control sessions, the pptp-gre sessions once data flowed, and NAT sessions.

    Args:
        page: which of the NAT sessions (by id) and then the ALG-off GRE bindings to
            show, each with the rows that follow it (all by default).
    """
    entries = []
    controls = {c.session.id: c for c in gateway.connections()}
    sessions = sorted(gateway.nat.sessions(), key=lambda s: s.id)
    bindings = gateway.plain_gre()
    start, stop, _ = page.indices(len(sessions) + len(bindings))
    for session in sessions[start:stop]:
        left = int(gateway.nat.idle_timeout(session.proto) - (now - session.last_seen))
        conn = controls.get(session.id)
        destination = f"{session.remote_ip}"
        if session.proto is not Proto.ICMP:
            destination += f":{session.remote_port}"
        counts = gateway.session_counts(session.id)
        entries.append(SessionEntry(
            protocol="pptp" if conn is not None else Proto(session.proto).name.lower(),
            source=f"{session.inside_ip}:{session.inside_port}",
            source_nat=f"{session.public_ip}:{session.public_port}",
            destination=destination, destination_nat="", inspected=conn is not None,
            left_seconds=left, packets=counts[0] if counts else None,
            bytes=counts[1] if counts else None,
            path=(None if conn is None and session.proto is not Proto.ICMP
                  else GrePath.CONTROLLER),
        ))
        if conn is None:
            continue
        for call in sorted(conn.calls, key=lambda c: c.index):
            entries.extend(_gre_sessions(gateway, call, now))
    for binding in bindings[max(0, start - len(sessions)):max(0, stop - len(sessions))]:
        entries.append(SessionEntry(
            protocol="gre", source=f"{binding.client_ip}:0", source_nat=f"{binding.public_ip}:0",
            destination=f"{binding.server_ip}:0", destination_nat="", inspected=False,
            left_seconds=int(gateway.config.gre_idle - (now - binding.last_seen)),
            packets=binding.outbound_packets + binding.inbound_packets, path=GrePath.FLOW,
        ))
    return entries


def _gre_sessions(gateway: Gateway, call: Call, now: float) -> list[SessionEntry]:
    if call.state is not CallState.ESTABLISHED or call.data_idle:
        return []
    conn = call.conn
    assert call.client_call_id is not None and call.public_call_id is not None
    left = int(gateway.config.gre_idle - (now - call.last_data))
    (up_packets, up_bytes), (down_packets, down_bytes) = gateway.gre_counts(call)
    up_packets += call.outbound_packets
    down_packets += call.inbound_packets
    up_path, down_path = gre_paths(gateway, call)
    out = []
    if down_packets:
        out.append(SessionEntry(
            protocol="pptp-gre", source=f"{conn.server_ip}:0", source_nat="",
            destination=f"{conn.public_ip}:{call.public_call_id}",
            destination_nat=f"{conn.client_ip}:{call.client_call_id}", inspected=False,
            left_seconds=left, packets=down_packets, bytes=down_bytes + call.inbound_bytes,
            path=down_path,
        ))
    if up_packets:
        out.append(SessionEntry(
            protocol="pptp-gre", source=f"{conn.client_ip}:0", source_nat=f"{conn.public_ip}:0",
            destination=f"{conn.server_ip}:{call.server_call_id}", destination_nat="",
            inspected=False, left_seconds=left, packets=up_packets,
            bytes=up_bytes + call.outbound_bytes, path=up_path,
        ))
    return out


def session_table_size(gateway: Gateway) -> int:
    """How many items :func:`session_table` pages over (NAT sessions and ALG-off GRE
    bindings)."""
    return len(gateway.nat) + len(gateway.plain_gre())


def render(entries: list[SessionEntry] | list[ServerMapEntry], verbose: bool = False) -> str:
    """The entries as the display command prints them, one block per entry."""
    return "\n".join(entry.render(verbose) for entry in entries)


def as_json(entries: list[SessionEntry] | list[ServerMapEntry]) -> list[dict[str, Any]]:
    """The entries as plain dicts, for REST."""
    return [asdict(entry) for entry in entries]
