"""Restarts: the core takes back what a store kept, and brings a switch's entries in line.

After a controller restart the app calls :meth:`alg.engine.Gateway.restore` once, with
the store's records and what the switch holds of the core's entries; on every later
connection of the switch, :meth:`alg.engine.Gateway.reconcile` with the entries alone.

Restore: sessions come back with their ids and public endpoints, control connections
with their sequence numbers (each direction resynchronises, ``alg.relay``), calls with
their Call IDs, hold-downs with their ends, ALG-off GRE bindings with their entries. A
record that contradicts what came back before it, or the ALG switch as configured now (a
control connection with the ALG off, a TCP/1723 session that was not one with it on), is
left out, counted (``restore_skipped``) and forgotten; what came back is written again
as it stands now (an id or a hold-down may have changed). Every value of every record is
checked for its type and range first (:meth:`~alg.snapshot.Snapshot.validated`): a
record that fails is left out and counted with those the store already refused
(``restore_records_rejected``). If the restore still fails, the core starts empty
(``restore_failures``): the switch's entries are all removed and the store's records
forgotten, and the output's ``errors`` say so.

Reconcile: missing entries of live sessions, control connections, server-map pairs and
ALG-off bindings are installed, then entries the core does not own are removed (installs
first: an entry with the same match under an old cookie is replaced before the old
cookie's removal). After a controller restart the entries are found by the ids the store
kept, so nothing is installed again; after a switch restart everything is. Ids continue
above every id the switch names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alg.calls import CallState
from alg.codec import PPTP_PORT
from alg.events import ControlEntry, EntryKind, Output, RemoveEntries, SessionEntries
from alg.nat import Proto
from alg.snapshot import Change, Forget, Snapshot

if TYPE_CHECKING:
    from alg.engine import Gateway, Installed

SESSION_KINDS = frozenset({EntryKind.SESSION, EntryKind.CONTROL})
"""Entries whose id is a NAT session's (the others' ids are the core's
:class:`~alg.engine.Ids`)."""


def highest_core_id(installed: Installed) -> int:
    """The highest id from the core's :class:`~alg.engine.Ids` that a switch holds: not a
    session's (the NAT table's own ids) nor a return entry's (its client's address,
    ``alg.demuxtable.return_entry_id``)."""
    return max((i for k, i in installed
                if k not in SESSION_KINDS and k is not EntryKind.DEMUX_RETURN), default=0)


def restore(gw: Gateway, snapshot: Snapshot, installed: Installed, now: float) -> Output:
    """Take back ``snapshot``'s records into ``gw`` (a core that has seen nothing yet),
    then reconcile with the switch (see the module).

    Args:
        gw: the core.
        snapshot: the store's records.
        installed: what the switch holds of the core's entries.
        now: the time.
    """
    checked = snapshot.validated()
    rejected = checked.rejected
    gw.counters.restore_records_rejected += len(rejected)
    try:
        out = _take_back(gw, checked, installed, now)
    except Exception as exc:
        gw.start_empty()
        gw.counters.restore_records_rejected = len(rejected)
        gw.counters.restore_failures += 1
        out = gw.reconcile(installed)
        out.records[:0] = _forget_all(checked)
        out.errors.append(f"restore failed ({type(exc).__name__}: {exc}): the gateway "
                          "starts without its saved state")
    if rejected:
        out.errors.insert(0, f"restore: {len(rejected)} records with a value of the "
                             f"wrong type or out of range left out, the first: "
                             f"{rejected[0]}")
    return out


def _take_back(gw: Gateway, snapshot: Snapshot, installed: Installed, now: float) -> Output:
    gw.journal.drain()
    left_out: list[Change] = []
    alg = gw.config.alg_enabled
    controls = {r.session_id for r in snapshot.connections} if alg else set()
    sessions = {}
    for session_record in sorted(snapshot.sessions, key=lambda r: r.id):
        control = alg and session_record.proto == Proto.TCP and (
            session_record.remote_port == PPTP_PORT)
        session = None
        if control == (session_record.id in controls):
            session = gw.nat.adopt(session_record, now)
        if session is None:
            left_out.append(Forget("session", session_record.id))
        else:
            sessions[session.id] = session
    hold_down = gw.config.call_id_hold_down
    for held in snapshot.held:
        until = min(held.until, now + hold_down)
        if until <= now or not gw.call_ids.adopt(
            held.public_ip, held.server_ip, held.call_id, until, held.host
        ):
            left_out.append(Forget("held", (held.public_ip, held.server_ip, held.call_id)))
    gw.ids.skip(max((max(r.index, r.outbound_entry or 0, r.inbound_entry or 0)
                     for r in snapshot.calls), default=0))
    gw.ids.skip(max((max(r.outbound_id, r.inbound_id) for r in snapshot.plain), default=0))
    gw.ids.skip(highest_core_id(installed))
    connections = {}
    for conn_record in snapshot.connections:
        session = sessions.get(conn_record.session_id)
        if not alg or session is None or gw.control.is_control(session.id):
            left_out.append(Forget("connection", conn_record.session_id))
            continue
        connections[session.id] = gw.control.restore(session, conn_record)
    closing_order = sorted(snapshot.calls, key=lambda r: (
        r.state == CallState.CLOSED.value, r.hold_until, r.index))
    for call_record in closing_order:
        conn = connections.get(call_record.session_id)
        if conn is None or not gw.call_control.restore(conn.calls, call_record, now):
            left_out.append(Forget("call", call_record.index))
    plain_left = snapshot.plain if alg else gw.plain.restore(snapshot.plain, now)
    left_out += [Forget("plain", (r.client_ip, r.server_ip)) for r in plain_left]
    gw.ids.skip(max((r.id for r in snapshot.hosts), default=0))
    hosts_left = gw.hosts.restore(snapshot.hosts) if gw.datapath_nat else snapshot.hosts
    left_out += [Forget("host", r.inside_ip) for r in hosts_left]
    gw.counters.restore_skipped += len(left_out)
    out = gw.reconcile(installed)
    out.records[:0] = left_out
    return out


def reconcile(gw: Gateway, installed: Installed) -> Output:
    """The entries ``gw`` must install on a switch holding ``installed`` (pipeline
    included), and those of its cookie it must remove (see the module)."""
    gw.nat.skip_ids(max((i for k, i in installed if k in SESSION_KINDS), default=0))
    gw.ids.skip(highest_core_id(installed))
    out = Output()
    owned: set[tuple[EntryKind, int]] = set()
    for conn in gw.control.connections():
        key = (EntryKind.CONTROL, conn.session.id)
        owned.add(key)
        if key not in installed:
            out.decisions.append(ControlEntry(conn.session))
    for session in gw.nat.sessions():
        if session.proto is Proto.ICMP or gw.control.is_control(session.id):
            continue
        key = (EntryKind.SESSION, session.id)
        owned.add(key)
        if installed.get(key, 0) < 2:
            gw.session_stats.forget(session.id)
            out.decisions.append(SessionEntries(session, gw.nat.idle_timeout(session.proto)))
    owned |= gw.server_map.reinstall(installed, out)
    owned |= gw.plain.reinstall(installed, out)
    owned |= gw.hosts.reinstall(installed, out)
    out.decisions.extend(
        RemoveEntries(kind, entry_id) for kind, entry_id in installed
        if kind is not EntryKind.PIPELINE and (kind, entry_id) not in owned
    )
    return out


def _forget_all(snapshot: Snapshot) -> list[Change]:
    """Forget every record of ``snapshot`` (a session takes its connection and calls)."""
    changes: list[Change] = [Forget("session", r.id) for r in snapshot.sessions]
    changes += [Forget("connection", r.session_id) for r in snapshot.connections]
    changes += [Forget("call", r.index) for r in snapshot.calls]
    changes += [Forget("held", (r.public_ip, r.server_ip, r.call_id)) for r in snapshot.held]
    changes += [Forget("plain", (r.client_ip, r.server_ip)) for r in snapshot.plain]
    changes += [Forget("host", r.inside_ip) for r in snapshot.hosts]
    return changes
