"""Call ID allocation per (public IP, server IP) pair.

The server tells calls apart by the Call ID it sees, so two inside calls that leave from the
same public address to the same server need distinct Call IDs. The client's own ID is kept
whenever it is free on the pair (the flow path: GRE from the server then needs no key
rewrite). A released ID is held down for a while, so that late GRE of an ended call that
the controller demultiplexes (the controller path) is never delivered to a new call.

Each inside host has a share of each pair's IDs (``max_call_ids_per_host``): the IDs it
holds, in use and held down together, counted over all its control connections and for as
long as each hold-down lasts. A host that asks for more is refused; no other host loses
anything, and no hold-down is shortened to make room.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from alg.config import check_seconds
from alg.errors import CallIdExhaustedError, LimitError
from alg.snapshot import HeldRecord, Journal

CALL_ID_SPACE = 65536
"""Number of distinct Call IDs; 0 is a valid one (pptpd uses it)."""

Pair = tuple[IPv4Address, IPv4Address]
"""A (public IP, server IP) pair."""


@dataclass(slots=True)
class _PairState:
    """The Call IDs of one pair that are in use or held down.

    Attributes:
        in_use: IDs handed out and not released.
        held: released IDs mapped to the time their hold-down ends.
        cursor: where the next search for a free ID starts (just after the last one a
            search found), None before the pair's first collision.
        owners: the inside host each ID in use or held down counts against.
        per_host: how many of the pair's IDs each host holds (in use and held down).
    """

    in_use: set[int] = field(default_factory=set)
    held: dict[int, float] = field(default_factory=dict)
    hold_end: float = 0.0
    cursor: int | None = None
    owners: dict[int, IPv4Address] = field(default_factory=dict)
    per_host: dict[IPv4Address, int] = field(default_factory=dict)

    def own(self, call_id: int, host: IPv4Address | None) -> None:
        if host is not None:
            self.owners[call_id] = host
            self.per_host[host] = self.per_host.get(host, 0) + 1

    def disown(self, call_id: int) -> None:
        host = self.owners.pop(call_id, None)
        if host is not None:
            left = self.per_host[host] - 1
            if left:
                self.per_host[host] = left
            else:
                del self.per_host[host]

    def taken(self) -> int:
        return len(self.in_use) + len(self.held)

    def is_free(self, call_id: int) -> bool:
        return call_id not in self.in_use and call_id not in self.held


class CallIdAllocator:
    """Hands out Call IDs per (public IP, server IP) pair, with a hold-down after release.

    Memory is bounded by the IDs in use or held down: a pair is forgotten as soon as it has
    neither. Expired hold-downs are purged lazily, over all pairs, on every allocation and
    release (one heap ordered by end of hold-down, so a purge costs only what it removes).
    """

    def __init__(self, hold_down: float, journal: Journal | None = None) -> None:
        """Creates an empty allocator.

        Args:
            hold_down: seconds a released Call ID stays unusable on its pair.
            journal: where hold-downs begun and ended are noted (``alg.snapshot``).

        Raises:
            ConfigError: ``hold_down`` is not positive (the rule of ``call_id_hold_down``).
        """
        check_seconds("call_id_hold_down", hold_down)
        self._hold_down = hold_down
        self._journal = journal if journal is not None else Journal()
        self._pairs: dict[Pair, _PairState] = {}
        self._expiries: list[tuple[float, IPv4Address, IPv4Address, int]] = []
        self._count_in_use = 0

    @property
    def hold_down(self) -> float:
        """Seconds a released Call ID stays unusable on its pair."""
        return self._hold_down

    def allocate(
        self, public_ip: IPv4Address, server_ip: IPv4Address, preferred: int, now: float,
        host: IPv4Address | None = None, share: int = CALL_ID_SPACE,
    ) -> int:
        """Takes a Call ID on a pair, the preferred one if it is free.

        Args:
            public_ip: the public address the call leaves from.
            server_ip: the server's address.
            preferred: the ID to keep if possible (the client's own Call ID).
            now: the current time.
            host: the inside host the ID counts against, until its hold-down ends
                (None: none).
            share: most IDs of the pair ``host`` may hold, in use and held down.

        Returns:
            ``preferred`` if it is neither in use nor held down on the pair, else the next
            such ID after the one the pair's previous collision got (at the pair's first
            collision: after ``preferred``), wrapping from 65535 to 0. The search goes on
            from where the last one stopped, like a rotating counter: when many clients
            start their Call IDs at the same numbers, the IDs handed out form one block,
            and a search from each ``preferred`` would walk that whole block again.

        Raises:
            ValueError: ``preferred`` is outside 0..65535.
            LimitError: ``host`` holds its share of the pair's IDs.
            CallIdExhaustedError: every ID of the pair is in use or held down.
        """
        if not 0 <= preferred < CALL_ID_SPACE:
            raise ValueError(f"Call ID must be in 0..{CALL_ID_SPACE - 1}, got {preferred}")
        self.purge(now)
        pair = (public_ip, server_ip)
        state = self._pairs.get(pair)
        if host is not None and state is not None and (
            state.per_host.get(host, 0) >= share
        ):
            raise LimitError(
                "max_call_ids_per_host", f"{host} holds {share} Call IDs of public "
                f"{public_ip} to server {server_ip}, in use or held down"
            )
        if state is None:
            state = self._pairs[pair] = _PairState()
        call_id = preferred
        if not state.is_free(call_id):
            if state.taken() >= CALL_ID_SPACE:
                raise CallIdExhaustedError(
                    f"no free Call ID for public {public_ip} to server {server_ip}: "
                    f"{len(state.in_use)} in use, {len(state.held)} held down"
                )
            call_id = (preferred + 1 if state.cursor is None else state.cursor) % CALL_ID_SPACE
            while not state.is_free(call_id):
                call_id = (call_id + 1) % CALL_ID_SPACE
            state.cursor = (call_id + 1) % CALL_ID_SPACE
        state.in_use.add(call_id)
        state.own(call_id, host)
        self._count_in_use += 1
        return call_id

    def release(
        self, public_ip: IPv4Address, server_ip: IPv4Address, call_id: int, now: float
    ) -> None:
        """Gives a Call ID back; it is held down until ``now + hold_down``.

        Releasing an ID that is not in use does nothing.

        Args:
            public_ip: the public address the call left from.
            server_ip: the server's address.
            call_id: the ID :meth:`allocate` returned.
            now: the current time.
        """
        self.purge(now)
        pair = (public_ip, server_ip)
        state = self._pairs.get(pair)
        if state is None or call_id not in state.in_use:
            return
        state.in_use.remove(call_id)
        self._count_in_use -= 1
        self._hold(public_ip, server_ip, call_id, now + self._hold_down)

    def adopt(
        self, public_ip: IPv4Address, server_ip: IPv4Address, call_id: int,
        until: float | None = None, host: IPv4Address | None = None,
    ) -> bool:
        """Takes back a Call ID a store kept (after a restart): in use, or held down
        ``until`` then, counted against ``host``.

        Returns:
            False when the ID is out of range or already in use or held down on the pair
            (the record contradicts the allocator and is left out).
        """
        state = self._pairs.get((public_ip, server_ip))
        if not 0 <= call_id < CALL_ID_SPACE or (state is not None and not state.is_free(call_id)):
            return False
        if state is None:
            state = self._pairs[(public_ip, server_ip)] = _PairState()
        state.own(call_id, host)
        if until is None:
            state.in_use.add(call_id)
            self._count_in_use += 1
        else:
            self._hold(public_ip, server_ip, call_id, until)
        return True

    def _hold(self, public_ip: IPv4Address, server_ip: IPv4Address, call_id: int,
              until: float) -> None:
        state = self._pairs[(public_ip, server_ip)]
        state.held[call_id] = until
        state.hold_end = max(state.hold_end, until)
        heapq.heappush(self._expiries, (until, public_ip, server_ip, call_id))
        host = state.owners.get(call_id)
        self._journal.save("held", (public_ip, server_ip, call_id),
                           lambda: HeldRecord(public_ip, server_ip, call_id, until, host))

    def in_use(self, public_ip: IPv4Address, server_ip: IPv4Address, call_id: int) -> bool:
        """Tells whether a Call ID is allocated and not released on a pair."""
        state = self._pairs.get((public_ip, server_ip))
        return state is not None and call_id in state.in_use

    def held_down(
        self, public_ip: IPv4Address, server_ip: IPv4Address, call_id: int, now: float
    ) -> bool:
        """Tells whether a released Call ID is still unusable on a pair at ``now``."""
        state = self._pairs.get((public_ip, server_ip))
        if state is None:
            return False
        until = state.held.get(call_id)
        return until is not None and now < until

    def holds(self, public_ip: IPv4Address, server_ip: IPv4Address, now: float) -> bool:
        """Tells whether any released Call ID of a pair is still held down at ``now``."""
        state = self._pairs.get((public_ip, server_ip))
        return state is not None and now < state.hold_end

    def held_by(self, public_ip: IPv4Address, server_ip: IPv4Address, host: IPv4Address
                ) -> int:
        """How many IDs of a pair count against ``host`` (in use and held down)."""
        state = self._pairs.get((public_ip, server_ip))
        return 0 if state is None else state.per_host.get(host, 0)

    def count_in_use(self) -> int:
        """Returns the number of Call IDs in use over all pairs."""
        return self._count_in_use

    def count_held_down(self) -> int:
        """Returns the number of Call IDs held down over all pairs, as of the last purge."""
        return len(self._expiries)

    def pair_count(self) -> int:
        """Returns the number of pairs with a Call ID in use or held down."""
        return len(self._pairs)

    def purge(self, now: float) -> int:
        """Ends every hold-down that is over at ``now`` and forgets pairs left empty.

        Allocation and release call this themselves; call it from a periodic tick too, so
        that hold-downs end (and their memory goes) when nothing is allocated for a while.

        Args:
            now: the current time.

        Returns:
            The number of Call IDs that left hold-down.
        """
        ended = 0
        while self._expiries and self._expiries[0][0] <= now:
            _, public_ip, server_ip, call_id = heapq.heappop(self._expiries)
            pair = (public_ip, server_ip)
            state = self._pairs[pair]
            del state.held[call_id]
            state.disown(call_id)
            self._journal.forget("held", (public_ip, server_ip, call_id))
            if not state.in_use and not state.held:
                del self._pairs[pair]
            ended += 1
        return ended
