"""The established calls by the GRE key each of their directions carries.

An ICMP error quotes a GRE packet, whose key is all that tells the call (RFC 2637 section
4.1): from outside, client -> server GRE that left a public address with the server's
Call ID ``c``; from inside, server -> client GRE that reached a client with its own
``a``. :class:`GreCallIndex` finds the call of such a key in one lookup, however many
calls the (server, public address) pair has, where a scan of the pair's calls costs
each error time in proportion to them. The server-map keeps it, adding each call when
it is established (or restored established) and removing it when it ends; a call's
addresses and IDs do not change while it is established.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from alg.calls import Call

Key = tuple[IPv4Address, IPv4Address, int]


class GreCallIndex:
    """Established calls by (server, public address, ``c``) and (client, server, ``a``).

    Two calls of one (server, public address) pair may have the same ``c`` (two clients'
    servers chose it); the calls of one key are kept in the order they were added.
    """

    def __init__(self) -> None:
        self._sent: dict[Key, list[Call]] = {}
        self._received: dict[Key, list[Call]] = {}

    def __len__(self) -> int:
        return sum(len(calls) for calls in self._sent.values())

    @staticmethod
    def _keys(call: Call) -> tuple[Key, Key]:
        conn = call.conn
        assert call.server_call_id is not None and call.client_call_id is not None
        return ((conn.server_ip, conn.public_ip, call.server_call_id),
                (conn.client_ip, conn.server_ip, call.client_call_id))

    def add(self, call: Call) -> None:
        """Index an established call (with its ``a`` and ``c``)."""
        sent, received = self._keys(call)
        self._sent.setdefault(sent, []).append(call)
        self._received.setdefault(received, []).append(call)

    def remove(self, call: Call) -> None:
        """Forget a call (nothing if it is not indexed)."""
        for index, key in zip((self._sent, self._received), self._keys(call), strict=True):
            calls = index.get(key)
            if calls is not None and call in calls:
                calls.remove(call)
                if not calls:
                    del index[key]

    def sent(self, server_ip: IPv4Address, public_ip: IPv4Address, server_call_id: int
             ) -> list[Call]:
        """The calls whose client -> server GRE leaves ``public_ip`` for ``server_ip``
        with key ``server_call_id``, oldest first."""
        return list(self._sent.get((server_ip, public_ip, server_call_id), ()))

    def received(self, client_ip: IPv4Address, server_ip: IPv4Address, client_call_id: int
                 ) -> list[Call]:
        """The calls whose server -> client GRE from ``server_ip`` reaches ``client_ip``
        with key ``client_call_id``, oldest first."""
        return list(self._received.get((client_ip, server_ip, client_call_id), ()))
