"""The PPTP call state machine: one function per control message and direction.

Each message whose decision bytes are in (see ``alg.framer``) comes here with its
direction; the function for that (message type, direction) finds the call by the ID the
message carries, moves it through its states (RFC 2637 sections 2.7-2.13), opens or
closes its server-map entries, and returns the message with its Call IDs translated.
A message a side may not send (RFC 2637 roles) has no function: it raises
:class:`~alg.errors.ProtocolError` and the connection is reset.
:attr:`CallControl.MOVES`, beside the table of functions, says which states each
function may move a call to.

Policies (also in docs/design.md):

* Unknown Call ID in a valid message: counted and passed unchanged; peers scope Call
  IDs per control connection, so it cannot reach another client's call. The exception is
  an Incoming-Call-Reply for an unknown server Call ID: it is counted, and its client
  Call ID is still translated (a client's ID never leaves as is).
* Call-Disconnect-Notify: its Call ID is taken as the server's (``c``, RFC 2637 section
  2.13) when a live or recently closed call of the connection has that ``c`` (the
  server's answer to a Call-Clear-Request comes after the call closed), else as the
  public-side ID ``b`` (rewritten to ``a``). So an ID that is one call's ``c`` and
  another's ``b`` ends the call whose ``c`` it is.
* Call ID exhaustion on a (public IP, server) pair, or a new call beyond
  ``max_calls_per_connection``, ``max_calls_per_host``, ``max_calls`` or its host's share
  of the pair's Call IDs (``max_call_ids_per_host``, :mod:`alg.callid`), or while new
  calls are stopped (:attr:`CallControl.new_calls`): counted, the connection is reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from ipaddress import IPv4Address
from typing import Any, ClassVar

from alg.callid import CallIdAllocator
from alg.calls import Call, CallState, ConnectionCalls
from alg.codec import (
    CallClearRequest,
    CallDisconnectNotify,
    ControlMessage,
    EchoReply,
    EchoRequest,
    IncomingCallConnected,
    IncomingCallReply,
    IncomingCallRequest,
    M,
    OutgoingCallReply,
    OutgoingCallRequest,
    OutgoingCallResult,
    SetLinkInfo,
    StartControlConnectionReply,
    StartControlConnectionRequest,
    StopControlConnectionReply,
    StopControlConnectionRequest,
    WanErrorNotify,
    parse_message,
    replace,
)
from alg.config import AlgConfig
from alg.counters import Counters
from alg.errors import AllocationError, LimitError, ProtocolError
from alg.events import CallLog, Direction, Output
from alg.histogram import Histogram
from alg.servermap import ServerMap
from alg.snapshot import CallRecord

INCOMING_CALL_ACCEPT = 1
"""Incoming-Call-Reply Result Code: Connect (RFC 2637 section 2.10)."""

CALL_SETUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0)
"""Upper bounds (seconds) of the call setup time's buckets: from a reply on the same
machine to a server that dials out before it answers."""

Handler = Callable[[ConnectionCalls, Any, float, Output], ControlMessage]

OUT, IN = Direction.OUTBOUND, Direction.INBOUND


class CallControl:
    """The calls of every control connection, driven by their control messages.

    Args:
        config: the hold-down and server-map timeouts.
        counters: the core's counters.
        call_ids: the public Call ID allocator (per public address and server).
        server_map: where established calls' data channels go.
        ids: the core's id source (call indexes).
    """

    MOVES: ClassVar[Mapping[str, frozenset[CallState]]] = {
        "_pass": frozenset(),
        "_restore_peer": frozenset(),
        "_stop": frozenset({CallState.CLOSED}),
        "_outgoing_call_request": frozenset({CallState.REQUESTED}),
        "_outgoing_call_reply": frozenset({CallState.ESTABLISHED, CallState.CLOSED}),
        "_incoming_call_request": frozenset({CallState.OFFERED}),
        "_incoming_call_reply": frozenset({CallState.ANSWERED, CallState.CLOSED}),
        "_incoming_call_connected": frozenset({CallState.ESTABLISHED}),
        "_call_clear_request": frozenset({CallState.CLOSED}),
        "_call_disconnect_notify": frozenset({CallState.CLOSED}),
    }
    """The states each function of the table below may move a call to, by the function's
    name: the call the message names, a call it makes (REQUESTED, OFFERED; an
    Incoming-Call-Reply for an unknown server Call ID makes its call ANSWERED at once),
    or, for Stop-Control-Connection, every live call of the connection. Any other call
    keeps its state, and no function moves a call out of CLOSED.
    ``tests/unit/test_pptp_moves.py`` drives every function from every state and checks
    that what happens is exactly this."""

    def __init__(
        self,
        config: AlgConfig,
        counters: Counters,
        call_ids: CallIdAllocator,
        server_map: ServerMap,
        ids: Iterator[int],
    ) -> None:
        self._config = config
        self._counters = counters
        self._call_ids = call_ids
        self._server_map = server_map
        self._ids = ids
        self._live = 0
        self._per_host: dict[IPv4Address, int] = {}
        self.new_calls = True
        """False while new calls are stopped (:meth:`alg.engine.Gateway.stop_new_calls`):
        a new call is refused as a call beyond a limit is."""
        self.setup_seconds = {"outgoing": Histogram(CALL_SETUP_BUCKETS),
                              "incoming": Histogram(CALL_SETUP_BUCKETS)}
        """Call setup times by the call's direction: from its Outgoing-Call-Request to
        the Outgoing-Call-Reply, or from its Incoming-Call-Request to the
        Incoming-Call-Reply, whatever the reply's result (a call refused at its request,
        or whose request the gateway did not see, has none)."""
        self._handlers: dict[tuple[type[ControlMessage], Direction], Handler] = {
            (StartControlConnectionRequest, OUT): self._pass,
            (StartControlConnectionRequest, IN): self._pass,
            (StartControlConnectionReply, OUT): self._pass,
            (StartControlConnectionReply, IN): self._pass,
            (EchoRequest, OUT): self._pass,
            (EchoRequest, IN): self._pass,
            (EchoReply, OUT): self._pass,
            (EchoReply, IN): self._pass,
            (StopControlConnectionRequest, OUT): self._stop,
            (StopControlConnectionRequest, IN): self._stop,
            (StopControlConnectionReply, OUT): self._stop,
            (StopControlConnectionReply, IN): self._stop,
            (SetLinkInfo, OUT): self._pass,
            (SetLinkInfo, IN): self._restore_peer,
            (OutgoingCallRequest, OUT): self._outgoing_call_request,
            (IncomingCallReply, OUT): self._incoming_call_reply,
            (CallClearRequest, OUT): self._call_clear_request,
            (OutgoingCallReply, IN): self._outgoing_call_reply,
            (IncomingCallRequest, IN): self._incoming_call_request,
            (IncomingCallConnected, IN): self._incoming_call_connected,
            (CallDisconnectNotify, IN): self._call_disconnect_notify,
            (WanErrorNotify, IN): self._restore_peer,
        }

    def translate(
        self, calls: ConnectionCalls, direction: Direction, head: bytes, now: float,
        out: Output,
    ) -> bytes:
        """Act on one message (its decision bytes, see ``alg.framer``); return its rewrite.

        Raises:
            CodecError: the bytes are not a valid message.
            ProtocolError: that side may not send that message (RFC 2637 roles).
            AllocationError: no public Call ID is free for a new call.
        """
        message = parse_message(head)
        handler = self._handlers.get((type(message), direction))
        if handler is None:
            raise ProtocolError(
                f"{type(message).__name__} may not travel {direction.value} (RFC 2637 roles)"
            )
        rewritten = handler(calls, message, now, out)
        return head if rewritten is message else rewritten.encode()

    def restore(self, calls: ConnectionCalls, record: CallRecord, now: float) -> bool:
        """Take back a call a store kept, with its Call IDs; an established one gets its
        server-map again (its entries are the reconciliation's, ``alg.engine``).

        Returns:
            False when the record is not a call this machine could have made (a state
            without the IDs it implies, a public Call ID the allocator already has, a
            closed call past its hold-down): it is left out.
        """
        try:
            state = CallState(record.state)
        except ValueError:
            return False
        a, b, c = record.client_call_id, record.public_call_id, record.server_call_id
        needs = {
            CallState.REQUESTED: (a, b), CallState.OFFERED: (c,),
            CallState.ANSWERED: (a, b, c), CallState.ESTABLISHED: (a, b, c),
            CallState.CLOSED: (),
        }[state]
        if any(value is None for value in needs):
            return False
        hold_until = min(record.hold_until, now + self._config.call_id_hold_down)
        if state is CallState.CLOSED and (b is None or hold_until <= now):
            return False
        conn = calls.session
        if (state is not CallState.CLOSED and b is not None
                and not self._call_ids.adopt(conn.public_ip, conn.remote_ip, b,
                                             host=conn.inside_ip)):
            return False
        call = Call(
            record.index, calls, record.outgoing, state, created=now, last_data=now,
            client_call_id=a, public_call_id=b, server_call_id=c,
            call_serial_number=record.call_serial_number,
        )
        calls.add(call)
        if state is CallState.CLOSED:
            call.hold_until = hold_until
            calls.remove(call, keep=True)
            return True
        self._count(calls.client_ip, 1)
        if state is CallState.ESTABLISHED:
            ids = (record.outbound_entry, record.inbound_entry)
            self._server_map.open(call, now, Output(), ids)
        elif b is not None:
            self._server_map.reserve(call, now, Output())
        return True

    def close(self, call: Call, now: float, reason: str, out: Output) -> None:
        """End a call: its server-map entries go, its ``b`` goes into hold-down."""
        if call.state is CallState.CLOSED:
            return
        conn = call.conn
        kept = call.public_call_id is not None
        if kept:
            self._call_ids.release(conn.public_ip, conn.server_ip, call.public_id, now)
            call.hold_until = now + self._config.call_id_hold_down
        if call.state is CallState.ESTABLISHED:
            self._server_map.close(call, now, out)
            out.logs.append(self._log("torn down", call, reason))
        else:
            self._server_map.release(call, now, out)
        call.state = CallState.CLOSED
        call.end_reason = reason
        conn.remove(call, keep=kept)
        self._count(conn.client_ip, -1)

    def close_all(self, calls: ConnectionCalls, now: float, reason: str, out: Output) -> None:
        """End every live call of a connection."""
        for call in calls:
            self.close(call, now, reason, out)

    def age(self, calls: ConnectionCalls, now: float, out: Output) -> None:
        """Age calls by the server-map idle timeout.

        A call never set up within it ends. An established call stays, with its Call
        IDs, while its control connection lives: an idle data channel only loses its
        flow entries, which its next GRE packet reinstalls through the controller.
        """
        for call in calls:
            if now - call.last_data < self._config.gre_idle:
                continue
            if call.state is not CallState.ESTABLISHED:
                self.close(call, now, "never set up", out)
            elif not call.data_idle:
                self._server_map.idle(call, out)
        calls.forget(now)

    # The messages, one function each.

    @staticmethod
    def _pass(calls: ConnectionCalls, message: ControlMessage, now: float, out: Output
              ) -> ControlMessage:
        return message

    def _stop(self, calls: ConnectionCalls, message: ControlMessage, now: float, out: Output
              ) -> ControlMessage:
        self.close_all(calls, now, "Stop-Control-Connection", out)
        return message

    def _outgoing_call_request(
        self, calls: ConnectionCalls, message: OutgoingCallRequest, now: float, out: Output
    ) -> ControlMessage:
        call = calls.live("client", message.call_id)
        if call is None:
            call = self._new_call(calls, True, CallState.REQUESTED, now)
            call.client_call_id = message.call_id
            call.call_serial_number = message.call_serial_number
            calls.name_id(call, "client")
            self._allocate(call, now, out)
            call.requested = now
        return self._translated(replace(message, call_id=call.public_id))

    def _incoming_call_reply(
        self, calls: ConnectionCalls, message: IncomingCallReply, now: float, out: Output
    ) -> ControlMessage:
        call = calls.live("server", message.peer_call_id)
        if call is not None and call.client_call_id == message.call_id:
            # A repeated reply (already answered): the same b, never a second one.
            return self._translated(replace(message, call_id=call.public_id))
        if call is None or call.state is not CallState.OFFERED:
            self._counters.unknown_call_ids += 1
            call = self._new_call(calls, False, CallState.OFFERED, now)
            call.server_call_id = message.peer_call_id
            calls.name_id(call, "server")
        call.client_call_id = message.call_id
        calls.name_id(call, "client")
        call.state = CallState.ANSWERED
        self._allocate(call, now, out)
        self._replied(call, now)
        translated = self._translated(replace(message, call_id=call.public_id))
        if message.result_code != INCOMING_CALL_ACCEPT:
            self.close(call, now, "Incoming-Call-Reply refused", out)
        return translated

    def _call_clear_request(
        self, calls: ConnectionCalls, message: CallClearRequest, now: float, out: Output
    ) -> ControlMessage:
        call = calls.recent("client", message.call_id)
        if call is None:
            self._counters.unknown_call_ids += 1
            return message
        if call.state is not CallState.CLOSED:
            self.close(call, now, "Call-Clear-Request", out)
        return self._translated(replace(message, call_id=call.public_id))

    def _outgoing_call_reply(
        self, calls: ConnectionCalls, message: OutgoingCallReply, now: float, out: Output
    ) -> ControlMessage:
        call = calls.recent("public", message.peer_call_id)
        if call is None:
            self._counters.unknown_call_ids += 1
            return message
        reply = self._translated(replace(message, peer_call_id=call.client_id))
        if call.state is CallState.REQUESTED:
            self._replied(call, now)
            call.server_call_id = message.call_id
            calls.name_id(call, "server")
            if message.result_code == OutgoingCallResult.CONNECTED:
                self._establish(call, now, out)
            else:
                self.close(call, now, f"Outgoing-Call-Reply result {message.result_code}", out)
        return reply

    def _incoming_call_request(
        self, calls: ConnectionCalls, message: IncomingCallRequest, now: float, out: Output
    ) -> ControlMessage:
        if calls.live("server", message.call_id) is None:
            call = self._new_call(calls, False, CallState.OFFERED, now)
            call.server_call_id = message.call_id
            call.call_serial_number = message.call_serial_number
            calls.name_id(call, "server")
            call.requested = now
        return message

    def _incoming_call_connected(
        self, calls: ConnectionCalls, message: IncomingCallConnected, now: float, out: Output
    ) -> ControlMessage:
        call = calls.recent("public", message.peer_call_id)
        if call is None:
            self._counters.unknown_call_ids += 1
            return message
        if call.state is CallState.ANSWERED:
            self._establish(call, now, out)
        return self._translated(replace(message, peer_call_id=call.client_id))

    def _call_disconnect_notify(
        self, calls: ConnectionCalls, message: CallDisconnectNotify, now: float, out: Output
    ) -> ControlMessage:
        call = calls.recent("server", message.call_id)
        if call is not None:
            self.close(call, now, "Call-Disconnect-Notify", out)
            return message
        call = calls.recent("public", message.call_id)
        if call is None:
            self._counters.unknown_call_ids += 1
            return message
        if call.state is not CallState.CLOSED:
            self.close(call, now, "Call-Disconnect-Notify", out)
        return self._translated(replace(message, call_id=call.client_id))

    def _restore_peer(
        self, calls: ConnectionCalls, message: WanErrorNotify | SetLinkInfo, now: float,
        out: Output,
    ) -> ControlMessage:
        call = calls.recent("public", message.peer_call_id)
        if call is None:
            self._counters.unknown_call_ids += 1
            return message
        return self._translated(replace(message, peer_call_id=call.client_id))

    # Call life.

    def _translated(self, message: M) -> M:
        self._counters.call_ids_translated += 1
        return message

    def _new_call(
        self, calls: ConnectionCalls, outgoing: bool, state: CallState, now: float
    ) -> Call:
        if not self.new_calls:
            self._counters.calls_refused_cut_off += 1
            raise LimitError("store", "new calls are stopped: the store does not answer")
        limit = self._config.max_calls_per_connection
        if len(calls) >= limit:
            raise LimitError(
                "max_calls_per_connection", f"{calls.client_ip} has too many calls on one "
                "control connection",
            )
        if self._per_host.get(calls.client_ip, 0) >= self._config.max_calls_per_host:
            raise LimitError("max_calls_per_host", f"{calls.client_ip} has too many calls")
        if self._live >= self._config.max_calls:
            raise LimitError("max_calls", "too many calls")
        call = Call(next(self._ids), calls, outgoing, state, created=now, last_data=now)
        calls.add(call)
        self._count(calls.client_ip, 1)
        return call

    def _count(self, host: IPv4Address, change: int) -> None:
        """Count a live call of ``host`` in (1) or out (-1)."""
        self._live += change
        left = self._per_host.get(host, 0) + change
        if left:
            self._per_host[host] = left
        else:
            del self._per_host[host]

    def _allocate(self, call: Call, now: float, out: Output) -> None:
        conn = call.conn
        try:
            public_id = self._call_ids.allocate(
                conn.public_ip, conn.server_ip, call.client_id, now, conn.client_ip,
                self._config.max_call_ids_per_host,
            )
        except AllocationError:
            conn.remove(call, keep=False)
            self._count(conn.client_ip, -1)
            raise
        call.public_call_id = public_id
        conn.name_id(call, "public")
        if public_id != call.client_call_id:
            self._counters.call_ids_changed += 1
        self._server_map.reserve(call, now, out)

    def _replied(self, call: Call, now: float) -> None:
        """The reply to the call's request passed: its setup time, if its request was
        seen."""
        if call.requested is not None:
            direction = "outgoing" if call.outgoing else "incoming"
            self.setup_seconds[direction].observe(max(0.0, now - call.requested))

    def _establish(self, call: Call, now: float, out: Output) -> None:
        call.state = CallState.ESTABLISHED
        call.conn.changed(call)
        call.last_data = now
        self._counters.calls_set_up += 1
        self._server_map.release(call, now, out, choose=False)
        self._server_map.open(call, now, out)
        out.logs.append(self._log("set up", call))

    @staticmethod
    def _log(event: str, call: Call, reason: str = "") -> CallLog:
        conn = call.conn
        return CallLog(
            event, call.index, conn.client_ip, conn.public_ip, conn.server_ip,
            call.client_id, call.public_id, call.server_call_id, reason,
        )
