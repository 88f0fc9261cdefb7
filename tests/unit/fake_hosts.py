"""Hosts to plug into a :class:`~tests.unit.fake_switch.FakeSwitch`: real peers in miniature.

A :class:`Host` has one MAC and one IPv4 address on one switch port. It answers and
resolves ARP, checks every frame it gets as a real stack would (its MAC, its address,
the IPv4 and TCP/UDP checksums) and keeps what it accepted: GRE packets, UDP datagrams,
TCP segments of its connections. Its TCP is small but honest: handshake, sequence and
acknowledgement numbers, an ACK for every segment that carries data or FIN, FIN and RST.

On top: :class:`PptpServer` (a PAC that answers Start-Control-Connection, Echo,
Outgoing-Call and Call-Clear requests, RFC 2637) and :class:`PptpClient` (a PNS whose
requests the test makes). GRE carries the enhanced header of RFC 2637 section 4.1,
built and read with Scapy, its key the receiver's Call ID.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, GRE_PPTP, Ether
from scapy.packet import Packet, Raw

from alg.codec import (
    PPTP_PORT,
    CallClearRequest,
    CallDisconnectNotify,
    ControlMessage,
    EchoReply,
    EchoRequest,
    IncomingCallConnected,
    IncomingCallReply,
    IncomingCallRequest,
    OutgoingCallReply,
    OutgoingCallRequest,
    StartControlConnectionReply,
    StartControlConnectionRequest,
    StopControlConnectionReply,
    StopControlConnectionRequest,
    parse_header,
    parse_message,
)
from tests.unit.fake_switch import FakeSwitch, internet_checksum

BROADCAST = "ff:ff:ff:ff:ff:ff"
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
SEQ_MOD = 1 << 32
PPP_FRAME = b"\xff\x03\x00\x21" + bytes(range(20))


@dataclass(frozen=True)
class Gre:
    """A GRE packet a host accepted."""

    src: IPv4Address
    dst: IPv4Address
    call_id: int
    sequence: int | None
    payload: bytes
    ttl: int


@dataclass(frozen=True)
class Datagram:
    """A UDP datagram a host accepted."""

    src: IPv4Address
    src_port: int
    dst_port: int
    payload: bytes


def gre_packet(src: IPv4Address, dst: IPv4Address, call_id: int, sequence: int,
               payload: bytes = PPP_FRAME) -> Packet:
    """An IPv4 packet carrying enhanced GRE with key ``call_id`` and sequence number."""
    header = GRE_PPTP(call_id=call_id, seqnum_present=1, sequence_number=sequence)
    return IP(src=str(src), dst=str(dst)) / header / Raw(payload)


def _l4_checksum_ok(ip: bytes, ihl: int, total: int) -> bool:
    proto = ip[9]
    l4 = ip[ihl:total]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, proto, len(l4))
    if proto == 6:
        return len(l4) >= 20 and internet_checksum(pseudo + l4) == 0
    if proto == 17:
        return len(l4) >= 8 and (l4[6:8] == b"\0\0" or internet_checksum(pseudo + l4) == 0)
    if proto == 1:
        return internet_checksum(l4) == 0
    return True


class Host:
    """An IPv4 host on one port of the switch.

    Args:
        switch: the switch to plug into.
        port: the switch port.
        mac: the host's MAC.
        address: the host's address with its prefix, ``"192.168.1.1/24"``.
        gateway: the next hop for addresses off the host's subnet, if any.

    Attributes:
        neighbours: the ARP cache, address -> MAC.
        gre: the GRE packets it accepted, in order.
        datagrams: the UDP datagrams it accepted, in order.
        icmp: the ICMP packets it accepted (Scapy IP packets), in order.
        rejected: (reason, frame) of every frame a real host would have dropped.
    """

    def __init__(self, switch: FakeSwitch, port: int, mac: str, address: str,
                 gateway: str | None = None) -> None:
        self.switch = switch
        self.port = port
        self.mac = mac
        network = IPv4Network(address, strict=False)
        self.ip = IPv4Address(address.split("/")[0])
        self.network = network
        self.gateway = IPv4Address(gateway) if gateway else None
        self.neighbours: dict[IPv4Address, str] = {}
        self.waiting: dict[IPv4Address, list[Packet]] = {}
        self.gre: list[Gre] = []
        self.datagrams: list[Datagram] = []
        self.icmp: list[Packet] = []
        self.rejected: list[tuple[str, bytes]] = []
        self.listeners: dict[int, Callable[[TcpConnection], None]] = {}
        self.connections: dict[tuple[int, IPv4Address, int], TcpConnection] = {}
        self._isns = itertools.count(1_000_000 * (int(self.ip) % 97), 1_000_003)
        switch.attach(port, self)

    # Sending.

    def send_ip(self, packet: Packet) -> None:
        """Send an IPv4 packet (Scapy) to its destination's next hop, resolving it first."""
        dst = IPv4Address(packet[IP].dst)
        hop = dst if dst in self.network else self.gateway
        if hop is None:
            raise AssertionError(f"{self.ip} has no route to {dst}")
        mac = self.neighbours.get(hop)
        if mac is None:
            first = hop not in self.waiting
            self.waiting.setdefault(hop, []).append(packet)
            if first:
                self._arp(1, BROADCAST, hop)
            return
        self.switch.inject(self.port, bytes(Ether(src=self.mac, dst=mac) / packet))

    def send_gre(self, dst: IPv4Address, call_id: int, sequence: int,
                 payload: bytes = PPP_FRAME) -> None:
        """Send one GRE packet whose key carries ``call_id``."""
        self.send_ip(gre_packet(self.ip, dst, call_id, sequence, payload))

    def send_udp(self, dst: IPv4Address, src_port: int, dst_port: int, payload: bytes) -> None:
        """Send one UDP datagram."""
        self.send_ip(IP(src=str(self.ip), dst=str(dst))
                     / UDP(sport=src_port, dport=dst_port) / Raw(payload))

    def connect(self, dst: IPv4Address, dst_port: int, src_port: int,
                on_data: Callable[[TcpConnection, bytes], None]) -> TcpConnection:
        """Open a TCP connection (its SYN goes out)."""
        conn = TcpConnection(self, src_port, dst, dst_port, next(self._isns), on_data)
        self.connections[(src_port, dst, dst_port)] = conn
        conn.open()
        return conn

    def listen(self, port: int, on_accept: Callable[[TcpConnection], None]) -> None:
        """Accept TCP connections to ``port``; ``on_accept`` sets up each new one."""
        self.listeners[port] = on_accept

    def _arp(self, op: int, dst_mac: str, target: IPv4Address) -> None:
        arp = ARP(op=op, hwsrc=self.mac, psrc=str(self.ip),
                  hwdst="00:00:00:00:00:00" if op == 1 else dst_mac, pdst=str(target))
        self.switch.inject(self.port, bytes(Ether(src=self.mac, dst=dst_mac) / arp))

    # Receiving.

    def receive(self, frame: bytes) -> None:
        """Take one frame from the switch."""
        ether = Ether(frame)
        if ether.dst not in (self.mac, BROADCAST):
            self.rejected.append(("not my MAC", frame))
        elif ARP in ether:
            self._receive_arp(ether[ARP])
        elif ether.type == 0x0800:
            self._receive_ip(frame)
        else:
            self.rejected.append(("unknown EtherType", frame))

    def _receive_arp(self, arp: Packet) -> None:
        if IPv4Address(arp.pdst) != self.ip:
            return
        sender = IPv4Address(arp.psrc)
        self.neighbours[sender] = arp.hwsrc
        if arp.op == 1:
            self._arp(2, arp.hwsrc, sender)
        for packet in self.waiting.pop(sender, []):
            self.send_ip(packet)

    def _receive_ip(self, frame: bytes) -> None:
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        if internet_checksum(ip[:ihl]) != 0:
            self.rejected.append(("bad IPv4 header checksum", frame))
            return
        if IPv4Address(ip[16:20]) != self.ip:
            self.rejected.append(("not my address", frame))
            return
        if not _l4_checksum_ok(ip, ihl, total):
            self.rejected.append(("bad L4 checksum", frame))
            return
        packet = IP(ip[:total])
        if GRE_PPTP in packet:
            gre = packet[GRE_PPTP]
            self.gre.append(Gre(
                IPv4Address(packet.src), IPv4Address(packet.dst), gre.call_id,
                gre.sequence_number if gre.seqnum_present else None, bytes(gre.payload),
                packet.ttl,
            ))
        elif UDP in packet:
            udp = packet[UDP]
            self.datagrams.append(
                Datagram(IPv4Address(packet.src), udp.sport, udp.dport, bytes(udp.payload))
            )
        elif packet.proto == 1 and ICMP in packet:
            self.icmp.append(packet)
        elif TCP in packet:
            self._receive_tcp(packet)
        else:
            self.rejected.append(("unexpected protocol", frame))

    def _receive_tcp(self, packet: Packet) -> None:
        tcp = packet[TCP]
        key = (tcp.dport, IPv4Address(packet.src), tcp.sport)
        conn = self.connections.get(key)
        if conn is None and tcp.flags & (SYN | ACK | RST) == SYN and tcp.dport in self.listeners:
            conn = TcpConnection(self, tcp.dport, key[1], tcp.sport, next(self._isns), None)
            self.connections[key] = conn
            self.listeners[tcp.dport](conn)
        if conn is None:
            self.rejected.append(("no connection", bytes(packet)))
            return
        conn.segment(tcp)


class TcpConnection:
    """One end of a TCP connection: in-order data, an ACK for data and FIN, FIN, RST.

    Attributes:
        state: ``"syn-sent"``, ``"syn-received"``, ``"established"`` or ``"closed"``.
        received: the bytes received in order.
        segments: every segment received (Scapy TCP layers).
        reset: True once an RST arrived.
        fin_received: True once the peer's FIN arrived in order.
        close_on_fin: answer the peer's FIN with one of its own (as a server does).
    """

    def __init__(self, host: Host, local_port: int, remote_ip: IPv4Address, remote_port: int,
                 isn: int, on_data: Callable[[TcpConnection, bytes], None] | None) -> None:
        self.host = host
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.on_data = on_data
        self.snd_nxt = isn
        self.rcv_nxt = 0
        self.state = "closed"
        self.received = bytearray()
        self.segments: list[Packet] = []
        self.reset = False
        self.fin_sent = False
        self.fin_received = False
        self.close_on_fin = False
        self._sent_something = False

    def open(self) -> None:
        """Send the SYN."""
        self.state = "syn-sent"
        self._emit(SYN, options=[("MSS", 1460)])
        self.snd_nxt += 1

    def send(self, data: bytes) -> None:
        """Send ``data`` in one segment."""
        if self.state != "established":
            raise AssertionError(f"send on a connection in state {self.state}")
        self._emit(ACK | PSH, data)
        self.snd_nxt = (self.snd_nxt + len(data)) % SEQ_MOD

    def close(self) -> None:
        """Send a FIN."""
        self._emit(FIN | ACK)
        self.snd_nxt = (self.snd_nxt + 1) % SEQ_MOD
        self.fin_sent = True

    def abort(self) -> None:
        """Send an RST and forget the connection."""
        self._emit(RST | ACK)
        self.state = "closed"

    def _emit(self, flags: int, payload: bytes = b"",
              options: list[tuple[str, int]] | None = None) -> None:
        self._sent_something = True
        seg = TCP(sport=self.local_port, dport=self.remote_port, seq=self.snd_nxt,
                  ack=self.rcv_nxt if flags & ACK else 0, flags=flags, window=65535,
                  options=options or [])
        self.host.send_ip(IP(src=str(self.host.ip), dst=str(self.remote_ip)) / seg / payload)

    def segment(self, tcp: Packet) -> None:
        """Take one segment addressed to this connection."""
        self.segments.append(tcp)
        flags = int(tcp.flags)
        if flags & RST:
            self.reset = True
            self.state = "closed"
            return
        if self.state == "closed":
            if flags & (SYN | ACK) == SYN:
                self.state = "syn-received"
                self.rcv_nxt = (tcp.seq + 1) % SEQ_MOD
                self._emit(SYN | ACK, options=[("MSS", 1460)])
                self.snd_nxt = (self.snd_nxt + 1) % SEQ_MOD
            return
        if self.state == "syn-sent":
            if flags & (SYN | ACK) == SYN | ACK:
                self.rcv_nxt = (tcp.seq + 1) % SEQ_MOD
                self.state = "established"
                self._emit(ACK)
            return
        if self.state == "syn-received" and flags & ACK:
            self.state = "established"
        payload = bytes(tcp.payload)
        if not payload and not flags & FIN:
            if (tcp.seq - self.rcv_nxt) % SEQ_MOD >= 65535:
                self._emit(ACK)  # not acceptable: answered with an ACK (RFC 793 3.9)
            return
        if tcp.seq != self.rcv_nxt:
            self._emit(ACK)
            return
        self.rcv_nxt = (self.rcv_nxt + len(payload) + (1 if flags & FIN else 0)) % SEQ_MOD
        self._sent_something = False
        if payload:
            self.received += payload
            if self.on_data is not None:
                self.on_data(self, payload)
        if flags & FIN:
            self.fin_received = True
            if self.close_on_fin and not self.fin_sent:
                self.close()
        if not self._sent_something:
            self._emit(ACK)


class ControlStream:
    """Cuts a TCP byte stream into PPTP control messages by their Length field."""

    def __init__(self, on_message: Callable[[ControlMessage], None]) -> None:
        self.buffer = b""
        self.messages: list[ControlMessage] = []
        self.on_message = on_message

    def feed(self, data: bytes) -> None:
        """Add bytes; every message they complete is kept and handed on."""
        self.buffer += data
        while len(self.buffer) >= 12:
            length, _ = parse_header(self.buffer)
            if len(self.buffer) < length:
                return
            message = parse_message(self.buffer[:length])
            self.buffer = self.buffer[length:]
            self.messages.append(message)
            self.on_message(message)


@dataclass
class ServerCall:
    """A call as the server sees it.

    Attributes:
        call_id: the server's Call ID (``c``).
        peer_call_id: the gateway's public-side Call ID (``b``) from the request or
            reply; None while an incoming call waits for its reply.
        cleared: a Call-Clear-Request for it arrived, or the server ended it.
    """

    link: ServerLink
    call_id: int
    peer_call_id: int | None
    serial: int
    cleared: bool = False


@dataclass
class ServerLink:
    """One control connection at the server."""

    conn: TcpConnection
    stream: ControlStream
    calls: list[ServerCall] = field(default_factory=list)

    @property
    def public_ip(self) -> IPv4Address:
        """Where the control connection comes from (the gateway's public address)."""
        return self.conn.remote_ip

    def send(self, message: ControlMessage) -> None:
        self.conn.send(message.encode())


class PptpServer:
    """A PAC on TCP/1723 of ``host``: answers as RFC 2637 says, Call IDs from ``first_call_id``.

    Attributes:
        links: its control connections, in order of arrival.
    """

    def __init__(self, host: Host, first_call_id: int = 0x100) -> None:
        self.host = host
        self.links: list[ServerLink] = []
        self._call_ids = itertools.count(first_call_id)
        host.listen(PPTP_PORT, self._accept)

    def _accept(self, conn: TcpConnection) -> None:
        conn.close_on_fin = True
        link = ServerLink(conn, ControlStream(lambda m: self._message(link, m)))
        conn.on_data = lambda _c, data: link.stream.feed(data)
        self.links.append(link)

    def _message(self, link: ServerLink, message: ControlMessage) -> None:
        if isinstance(message, StartControlConnectionRequest):
            link.send(StartControlConnectionReply(host_name=b"pac".ljust(64, b"\0")))
        elif isinstance(message, EchoRequest):
            link.send(EchoReply(identifier=message.identifier))
        elif isinstance(message, StopControlConnectionRequest):
            link.send(StopControlConnectionReply())
        elif isinstance(message, OutgoingCallRequest):
            call = ServerCall(link, next(self._call_ids), message.call_id,
                              message.call_serial_number)
            link.calls.append(call)
            link.send(OutgoingCallReply(call_id=call.call_id, peer_call_id=message.call_id,
                                        result_code=1))
        elif isinstance(message, IncomingCallReply):
            for call in link.calls:
                if call.call_id == message.peer_call_id and call.peer_call_id is None:
                    call.peer_call_id = message.call_id
                    link.send(IncomingCallConnected(peer_call_id=message.call_id))
        elif isinstance(message, CallClearRequest):
            for call in link.calls:
                if call.peer_call_id == message.call_id and not call.cleared:
                    call.cleared = True
                    link.send(CallDisconnectNotify(call_id=call.call_id, result_code=3))

    def calls(self) -> list[ServerCall]:
        """Every call of every control connection."""
        return [c for link in self.links for c in link.calls]

    def call(self, call_id: int) -> ServerCall:
        """The call whose server Call ID is ``call_id``."""
        [found] = [c for c in self.calls() if c.call_id == call_id]
        return found

    def offer(self, link: ServerLink, serial: int = 1) -> ServerCall:
        """An incoming call on ``link``: Incoming-Call-Request with a new Call ID."""
        call = ServerCall(link, next(self._call_ids), None, serial)
        link.calls.append(call)
        link.send(IncomingCallRequest(call_id=call.call_id, call_serial_number=serial))
        return call

    def send_gre(self, call: ServerCall, sequence: int) -> None:
        """GRE of ``call`` to the client: to the public address, keyed by its ``b``."""
        assert call.peer_call_id is not None
        self.host.send_gre(call.link.public_ip, call.peer_call_id, sequence)

    def disconnect(self, call: ServerCall) -> None:
        """End ``call`` from the server's side (Call-Disconnect-Notify, unasked)."""
        call.cleared = True
        call.link.send(CallDisconnectNotify(call_id=call.call_id, result_code=3))


@dataclass
class ClientCall:
    """A call as the client sees it: ``a``, and ``c`` once the reply has come."""

    call_id: int
    server_call_id: int | None = None
    result_code: int | None = None
    disconnected: bool = False


class ClientLink:
    """A PNS's control connection to a server; the test says what it sends.

    Attributes:
        answer_with: the Call ID to accept an Incoming-Call-Request with (None: the
            request is left unanswered).
    """

    def __init__(self, host: Host, server_ip: IPv4Address, src_port: int) -> None:
        self.host = host
        self.server_ip = server_ip
        self.answer_with: int | None = None
        self.stream = ControlStream(self._message)
        self.calls: dict[int, ClientCall] = {}
        self.conn = host.connect(server_ip, PPTP_PORT, src_port,
                                 lambda _c, data: self.stream.feed(data))

    @property
    def messages(self) -> list[ControlMessage]:
        """The control messages received, in order."""
        return self.stream.messages

    def start(self) -> None:
        """Start-Control-Connection-Request."""
        self.conn.send(StartControlConnectionRequest(
            host_name=b"pns".ljust(64, b"\0")).encode())

    def call(self, call_id: int, serial: int = 1) -> ClientCall:
        """Outgoing-Call-Request with Call ID ``call_id`` (``a``)."""
        call = self.calls[call_id] = ClientCall(call_id)
        self.conn.send(OutgoingCallRequest(call_id=call_id, call_serial_number=serial).encode())
        return call

    def clear(self, call: ClientCall) -> None:
        """Call-Clear-Request for ``call``."""
        self.conn.send(CallClearRequest(call_id=call.call_id).encode())

    def echo(self, identifier: int) -> None:
        """Echo-Request (the keep-alive of a control connection)."""
        self.conn.send(EchoRequest(identifier=identifier).encode())

    def stop(self) -> None:
        """Stop-Control-Connection-Request."""
        self.conn.send(StopControlConnectionRequest(reason=1).encode())

    def send_gre(self, call: ClientCall, sequence: int) -> None:
        """GRE of ``call`` to the server, keyed by the server's Call ID."""
        assert call.server_call_id is not None
        self.host.send_gre(self.server_ip, call.server_call_id, sequence)

    def _message(self, message: ControlMessage) -> None:
        if isinstance(message, OutgoingCallReply):
            call = self.calls.get(message.peer_call_id)
            if call is not None:
                call.server_call_id = message.call_id
                call.result_code = message.result_code
        elif isinstance(message, CallDisconnectNotify):
            for call in self.calls.values():
                if call.server_call_id == message.call_id:
                    call.disconnected = True
        elif isinstance(message, EchoRequest):
            self.conn.send(EchoReply(identifier=message.identifier).encode())
        elif isinstance(message, IncomingCallRequest) and self.answer_with is not None:
            call = self.calls[self.answer_with] = ClientCall(self.answer_with, message.call_id)
            self.conn.send(IncomingCallReply(
                call_id=call.call_id, peer_call_id=message.call_id, result_code=1
            ).encode())
