"""NAPT state for TCP, UDP and ICMP echo, with paired address pooling.

Mapping is endpoint-independent (RFC 4787 section 4.1): an inside (proto, address, port)
gets one public (address, port), shared by all its sessions while any of them lives.
Filtering is address-and-port-dependent: from outside, only a session's exact remote gets in.
Pooling is paired (RFC 4787 section 4.1, REQ-2): an inside host keeps one public address for
everything while it holds any reference, and new hosts go to the least loaded address.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from alg.config import AlgConfig, check_public_ips
from alg.errors import LimitError, PortExhaustedError
from alg.snapshot import Journal, SessionRecord

PORT_MAX = 65535
"""Highest port number, and highest ICMP echo identifier."""


class Proto(enum.IntEnum):
    """IP protocol numbers the gateway handles."""

    ICMP = 1
    TCP = 6
    UDP = 17
    GRE = 47


class AddressPool:
    """Public addresses shared by inside hosts, with paired pooling.

    The pool counts references per inside host, not sessions: NAT sessions (the PPTP
    control connection's among them, which its calls share) and ALG-off GRE bindings each
    hold one. A host is bound to its address from its first reference to its last.
    """

    def __init__(self, addresses: Sequence[IPv4Address]) -> None:
        """Creates a pool with no host bound.

        Args:
            addresses: the public addresses, distinct, at least one.

        Raises:
            ConfigError: ``addresses`` is empty or has duplicates (the rule of
                ``public_ips``).
        """
        check_public_ips(addresses)
        self._addresses = tuple(sorted(addresses))
        self._hosts: dict[IPv4Address, int] = dict.fromkeys(self._addresses, 0)
        self._binding: dict[IPv4Address, IPv4Address] = {}
        self._refs: dict[IPv4Address, int] = {}

    @property
    def addresses(self) -> tuple[IPv4Address, ...]:
        """The public addresses of the pool, lowest first."""
        return self._addresses

    def acquire(self, inside_ip: IPv4Address, address: IPv4Address | None = None
                ) -> IPv4Address:
        """Takes one reference for an inside host and returns its public address.

        Args:
            inside_ip: the inside host.
            address: the address to bind an unbound host to (one of the pool's; a
                restore gives back the one a host had).

        Returns:
            The host's current public address if it has one, else ``address`` or the
            address with the fewest hosts (the lowest of those on a tie), to which the
            host is now bound.
        """
        public_ip = self._binding.get(inside_ip)
        if public_ip is None:
            public_ip = address if address in self._hosts else min(
                self._addresses, key=lambda a: self._hosts[a])
            assert public_ip is not None
            self._binding[inside_ip] = public_ip
            self._hosts[public_ip] += 1
            self._refs[inside_ip] = 0
        self._refs[inside_ip] += 1
        return public_ip

    def release(self, inside_ip: IPv4Address) -> None:
        """Gives back one reference of an inside host; at zero the host is unbound.

        Releasing a host that is not bound does nothing.

        Args:
            inside_ip: the inside host.
        """
        refs = self._refs.get(inside_ip)
        if refs is None:
            return
        if refs > 1:
            self._refs[inside_ip] = refs - 1
            return
        del self._refs[inside_ip]
        public_ip = self._binding.pop(inside_ip)
        self._hosts[public_ip] -= 1

    def lookup(self, inside_ip: IPv4Address) -> IPv4Address | None:
        """Returns the public address an inside host is bound to, if any."""
        return self._binding.get(inside_ip)

    def hosts_on(self, public_ip: IPv4Address) -> int:
        """Returns the number of inside hosts bound to a public address (0 if not pooled)."""
        return self._hosts.get(public_ip, 0)

    def refcount(self, inside_ip: IPv4Address) -> int:
        """Returns the number of references an inside host holds (0 if not bound)."""
        return self._refs.get(inside_ip, 0)


@dataclass(eq=False, slots=True)
class NatSession:
    """One NATed flow between an inside endpoint and a remote endpoint.

    For ICMP echo, ``inside_port`` and ``public_port`` are the echo identifiers and
    ``remote_port`` is 0.

    Attributes:
        id: unique within its table, from 1 upward, never reused (it goes into cookies).
        proto: the IP protocol.
        inside_ip: the inside host.
        inside_port: the inside host's port.
        public_ip: the public address the flow leaves from.
        public_port: the public port the flow leaves from.
        remote_ip: the outside peer.
        remote_port: the outside peer's port.
        created: when the session was made.
        last_seen: when the session last saw traffic.
        entries_sent: when its flow entries were last decided (None: never, or they
            could not be installed), see ``alg.napt``.
    """

    id: int
    proto: Proto
    inside_ip: IPv4Address
    inside_port: int
    public_ip: IPv4Address
    public_port: int
    remote_ip: IPv4Address
    remote_port: int
    created: float
    last_seen: float
    entries_sent: float | None = None

    def record(self) -> SessionRecord:
        """What the store keeps of the session."""
        return SessionRecord(
            self.id, int(self.proto), self.inside_ip, self.inside_port, self.public_ip,
            self.public_port, self.remote_ip, self.remote_port,
        )


@dataclass(slots=True)
class _Mapping:
    """The public endpoint of an inside endpoint, and how many sessions use it."""

    public_ip: IPv4Address
    public_port: int
    sessions: int = 0


@dataclass(slots=True)
class _PortSpace:
    """The public ports of one (proto, public address) that are taken.

    Attributes:
        used: every taken port.
        in_range: how many of ``used`` lie in the allocation range.
        cursor: where the next scan of the allocation range starts.
    """

    used: set[int]
    in_range: int
    cursor: int


_FlowKey = tuple[Proto, IPv4Address, int, IPv4Address, int]
_EndpointKey = tuple[Proto, IPv4Address, int]


def _check_port(name: str, port: int) -> None:
    if not 0 <= port <= PORT_MAX:
        raise ValueError(f"{name} must be in 0..{PORT_MAX}, got {port}")


class NatTable:
    """NAPT sessions of TCP, UDP and ICMP echo, with their indices and public ports.

    Memory is bounded by the live sessions: every index entry, port and pool reference of
    a session goes with it.
    """

    def __init__(
        self, config: AlgConfig, pool: AddressPool | None = None, journal: Journal | None = None
    ) -> None:
        """Creates an empty table.

        Args:
            config: timeouts and the public port range.
            pool: the address pool to share (with the PPTP engine); by default a new one
                over ``config.public_ips``.
            journal: where sessions made and removed are noted (``alg.snapshot``).
        """
        self._config = config
        self._journal = journal if journal is not None else Journal()
        self.pool = pool if pool is not None else AddressPool(config.public_ips)
        self._next_id = 1
        self._sessions: dict[int, NatSession] = {}
        self._by_flow: dict[_FlowKey, NatSession] = {}
        self._by_public: dict[_FlowKey, NatSession] = {}
        self._mappings: dict[_EndpointKey, _Mapping] = {}
        self._ports: dict[tuple[Proto, IPv4Address], _PortSpace] = {}
        self._per_host: dict[IPv4Address, int] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def idle_timeout(self, proto: Proto) -> float:
        """Returns the idle timeout of a protocol's sessions, in seconds."""
        if proto is Proto.TCP:
            return self._config.tcp_idle
        if proto is Proto.UDP:
            return self._config.udp_idle
        if proto is Proto.ICMP:
            return self._config.icmp_idle
        return self._config.gre_idle

    def outbound(
        self,
        proto: Proto,
        inside_ip: IPv4Address,
        inside_port: int,
        remote_ip: IPv4Address,
        remote_port: int,
        now: float,
    ) -> NatSession:
        """Finds or creates the session of a packet going out.

        An existing session gets ``last_seen = now``. A new one reuses its inside endpoint's
        public endpoint if that has a session already; otherwise it takes the host's pooled
        address and keeps ``inside_port`` if free there, else a free port of
        ``port_min..port_max`` (of 0..65535 for ICMP identifiers).

        Args:
            proto: TCP, UDP or ICMP.
            inside_ip: the inside host.
            inside_port: its port (ICMP: the echo identifier).
            remote_ip: the outside peer.
            remote_port: its port (ICMP: 0).
            now: the current time.

        Returns:
            The session.

        Raises:
            ValueError: ``proto`` is GRE, or a port is outside 0..65535.
            PortExhaustedError: no public port is free on the host's address.
            LimitError: the host has ``max_sessions_per_host`` sessions, or the table
                ``max_sessions``.
        """
        if proto is Proto.GRE:
            raise ValueError("GRE is not NATed by NatTable")
        _check_port("inside_port", inside_port)
        _check_port("remote_port", remote_port)
        flow = (proto, inside_ip, inside_port, remote_ip, remote_port)
        session = self._by_flow.get(flow)
        if session is not None:
            session.last_seen = max(session.last_seen, now)
            return session
        if self._per_host.get(inside_ip, 0) >= self._config.max_sessions_per_host:
            raise LimitError("max_sessions_per_host", f"{inside_ip} has too many NAT sessions")
        if len(self._sessions) >= self._config.max_sessions:
            raise LimitError("max_sessions", "the NAT table is full")
        public_ip = self.pool.acquire(inside_ip)
        endpoint = (proto, inside_ip, inside_port)
        mapping = self._mappings.get(endpoint)
        if mapping is None:
            try:
                public_port = self._take_port(proto, public_ip, inside_port)
            except PortExhaustedError:
                self.pool.release(inside_ip)
                raise
            mapping = self._mappings[endpoint] = _Mapping(public_ip, public_port)
        mapping.sessions += 1
        session = NatSession(
            id=self._next_id,
            proto=proto,
            inside_ip=inside_ip,
            inside_port=inside_port,
            public_ip=mapping.public_ip,
            public_port=mapping.public_port,
            remote_ip=remote_ip,
            remote_port=remote_port,
            created=now,
            last_seen=now,
        )
        self._next_id += 1
        self._insert(session)
        return session

    def adopt(self, record: SessionRecord, now: float) -> NatSession | None:
        """Takes back a session a store kept (after a restart), with its id and public
        endpoint.

        Returns:
            The session, or None when the record contradicts the table (its flow or
            public endpoint is taken, its inside endpoint maps elsewhere, its host is
            pooled on another address, or a value is out of range): such a record is
            left out.
        """
        try:
            proto = Proto(record.proto)
        except ValueError:
            return None
        flow = (proto, record.inside_ip, record.inside_port, record.remote_ip,
                record.remote_port)
        public_flow = (proto, record.public_ip, record.public_port, record.remote_ip,
                       record.remote_port)
        endpoint = (proto, record.inside_ip, record.inside_port)
        mapping = self._mappings.get(endpoint)
        bound = self.pool.lookup(record.inside_ip)
        if (
            proto is Proto.GRE or record.id in self._sessions or flow in self._by_flow
            or public_flow in self._by_public
            or record.public_ip not in self.pool.addresses
            or (bound is not None and bound != record.public_ip)
            or not all(0 <= p <= PORT_MAX for p in (
                record.inside_port, record.public_port, record.remote_port))
        ):
            return None
        if mapping is None:
            space = self._ports.get((proto, record.public_ip))
            if space is not None and record.public_port in space.used:
                return None
        elif (mapping.public_ip, mapping.public_port) != (record.public_ip, record.public_port):
            return None
        self.pool.acquire(record.inside_ip, record.public_ip)
        if mapping is None:
            self._claim_port(proto, record.public_ip, record.public_port)
            mapping = self._mappings[endpoint] = _Mapping(record.public_ip, record.public_port)
        mapping.sessions += 1
        session = NatSession(
            record.id, proto, record.inside_ip, record.inside_port, record.public_ip,
            record.public_port, record.remote_ip, record.remote_port, now, now,
        )
        self._next_id = max(self._next_id, record.id + 1)
        self._insert(session)
        return session

    def skip_ids(self, highest: int) -> None:
        """Hand out ids above ``highest`` from now on (ids the switch still has)."""
        self._next_id = max(self._next_id, highest + 1)

    def _insert(self, session: NatSession) -> None:
        self._sessions[session.id] = session
        inside_ip = session.inside_ip
        self._per_host[inside_ip] = self._per_host.get(inside_ip, 0) + 1
        proto = session.proto
        self._by_flow[(proto, inside_ip, session.inside_port, session.remote_ip,
                       session.remote_port)] = session
        self._by_public[(proto, session.public_ip, session.public_port, session.remote_ip,
                         session.remote_port)] = session
        self._journal.save("session", session.id, session.record)

    def inbound(
        self,
        proto: Proto,
        public_ip: IPv4Address,
        public_port: int,
        remote_ip: IPv4Address,
        remote_port: int,
    ) -> NatSession | None:
        """Finds the session of a packet coming in; never creates one.

        Args:
            proto: the IP protocol.
            public_ip: the packet's destination address.
            public_port: its destination port (ICMP: the echo identifier).
            remote_ip: its source address.
            remote_port: its source port (ICMP: 0).

        Returns:
            The session whose public endpoint and remote endpoint both match, or None.
        """
        return self._by_public.get((proto, public_ip, public_port, remote_ip, remote_port))

    def find(
        self,
        proto: Proto,
        inside_ip: IPv4Address,
        inside_port: int,
        remote_ip: IPv4Address,
        remote_port: int,
    ) -> NatSession | None:
        """Finds the session of a packet going out; never creates one."""
        return self._by_flow.get((proto, inside_ip, inside_port, remote_ip, remote_port))

    def mapping(
        self, proto: Proto, inside_ip: IPv4Address, inside_port: int
    ) -> tuple[IPv4Address, int] | None:
        """Returns the public (address, port) of an inside endpoint, if it has a session."""
        mapping = self._mappings.get((proto, inside_ip, inside_port))
        if mapping is None:
            return None
        return mapping.public_ip, mapping.public_port

    def get(self, session_id: int) -> NatSession | None:
        """Returns the live session with that id, or None."""
        return self._sessions.get(session_id)

    def touch(self, session_id: int, now: float) -> NatSession | None:
        """Records traffic on a session at ``now``; an unknown id is ignored.

        Returns:
            The session, or None if no live session has that id.
        """
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_seen = max(session.last_seen, now)
        return session

    def remove(self, session_id: int) -> NatSession | None:
        """Removes a session with its indices, public port and pool reference.

        Removing an unknown id does nothing.

        Returns:
            The removed session, or None.
        """
        session = self._sessions.pop(session_id, None)
        if session is None:
            return None
        self._journal.forget("session", session_id)
        proto = session.proto
        del self._by_flow[
            (proto, session.inside_ip, session.inside_port, session.remote_ip, session.remote_port)
        ]
        del self._by_public[
            (proto, session.public_ip, session.public_port, session.remote_ip, session.remote_port)
        ]
        endpoint = (proto, session.inside_ip, session.inside_port)
        mapping = self._mappings[endpoint]
        mapping.sessions -= 1
        if mapping.sessions == 0:
            del self._mappings[endpoint]
            self._free_port(proto, session.public_ip, session.public_port)
        self.pool.release(session.inside_ip)
        left = self._per_host[session.inside_ip] - 1
        if left:
            self._per_host[session.inside_ip] = left
        else:
            del self._per_host[session.inside_ip]
        return session

    def expire(self, now: float) -> list[NatSession]:
        """Removes every session idle for longer than its protocol's timeout.

        Args:
            now: the current time.

        Returns:
            The removed sessions, oldest id first.
        """
        expired = [
            session
            for session in self._sessions.values()
            if now - session.last_seen > self.idle_timeout(session.proto)
        ]
        for session in expired:
            self.remove(session.id)
        return expired

    def sessions(self) -> list[NatSession]:
        """Returns the live sessions, oldest id first."""
        return list(self._sessions.values())

    def _port_range(self, proto: Proto) -> tuple[int, int]:
        if proto is Proto.ICMP:
            return 0, PORT_MAX
        return self._config.port_min, self._config.port_max

    def _take_port(self, proto: Proto, public_ip: IPv4Address, preferred: int) -> int:
        low, high = self._port_range(proto)
        space = self._ports.get((proto, public_ip))
        if space is None:
            space = self._ports[(proto, public_ip)] = _PortSpace(set(), 0, low)
        port = preferred
        if port in space.used:
            size = high - low + 1
            if space.in_range >= size:
                raise PortExhaustedError(
                    f"no free {proto.name} port on {public_ip} in {low}..{high}"
                )
            port = space.cursor
            while port in space.used:
                port = low if port == high else port + 1
            space.cursor = low if port == high else port + 1
        self._claim_port(proto, public_ip, port)
        return port

    def _claim_port(self, proto: Proto, public_ip: IPv4Address, port: int) -> None:
        low, high = self._port_range(proto)
        space = self._ports.get((proto, public_ip))
        if space is None:
            space = self._ports[(proto, public_ip)] = _PortSpace(set(), 0, low)
        space.used.add(port)
        if low <= port <= high:
            space.in_range += 1

    def _free_port(self, proto: Proto, public_ip: IPv4Address, port: int) -> None:
        low, high = self._port_range(proto)
        space = self._ports[(proto, public_ip)]
        space.used.remove(port)
        if low <= port <= high:
            space.in_range -= 1
        if not space.used:
            del self._ports[(proto, public_ip)]
