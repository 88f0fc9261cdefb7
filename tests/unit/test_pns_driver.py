"""The PNS driver's pure pieces: control messages, stream cutting, enhanced GRE, the CLI.

Scapy (a test-only dependency) decodes and encodes the same bytes independently.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from scapy.layers import pptp as scapy_pptp
from scapy.layers.l2 import GRE_PPTP

from topo.pns_driver import PnsDriver, build_parser, parse_events
from topo.pptp_wire import (
    CCRQ,
    CDN,
    ECHORQ,
    MESSAGE_LENGTHS,
    OCRP,
    OCRQ,
    SCCRP,
    SCCRQ,
    SLI,
    STOPCCRP,
    STOPCCRQ,
    ControlStream,
    GrePacket,
    ProtocolError,
    build_ccrq,
    build_echo_reply,
    build_message,
    build_ocrq,
    build_sccrq,
    build_sli,
    build_stopccrq,
    gre_decode,
    gre_encode,
    parse_control,
    ppp_data,
    ppp_payload,
    split_points,
    strip_ipv4,
)


@pytest.mark.parametrize(
    ("message", "ctrl_type"),
    [
        (build_sccrq(), SCCRQ),
        (build_ocrq(4242, 3), OCRQ),
        (build_ccrq(4242), CCRQ),
        (build_stopccrq(), STOPCCRQ),
        (build_echo_reply(7), 6),
        (build_sli(128), SLI),
    ],
)
def test_built_messages_have_rfc_lengths_and_header(message: bytes, ctrl_type: int) -> None:
    assert len(message) == MESSAGE_LENGTHS[ctrl_type]
    length, msg_type, cookie, got_type, reserved = struct.unpack_from("!HHIHH", message)
    assert (length, msg_type, cookie, got_type, reserved) == (
        len(message), 1, 0x1A2B3C4D, ctrl_type, 0)
    assert parse_control(message).ctrl_type == ctrl_type


def test_messages_decode_with_scapy() -> None:
    ocrq = scapy_pptp.PPTP(build_ocrq(4242, 9, window=16, phone="555"))
    assert isinstance(ocrq, scapy_pptp.PPTPOutgoingCallRequest)
    assert (ocrq.call_id, ocrq.call_serial_number, ocrq.pkt_window_size) == (4242, 9, 16)
    assert ocrq.phone_number.rstrip(b"\0") == b"555"
    sccrq = scapy_pptp.PPTP(build_sccrq())
    assert isinstance(sccrq, scapy_pptp.PPTPStartControlConnectionRequest)
    assert sccrq.protocol_version == 0x0100
    ccrq = scapy_pptp.PPTP(build_ccrq(77))
    assert isinstance(ccrq, scapy_pptp.PPTPCallClearRequest) and ccrq.call_id == 77
    sli = scapy_pptp.PPTP(build_sli(128, 0xFFFFFFFF, 0))
    assert isinstance(sli, scapy_pptp.PPTPSetLinkInfo)
    assert (sli.peer_call_id, sli.send_accm) == (128, 0xFFFFFFFF)
    stop = scapy_pptp.PPTP(build_stopccrq(2))
    assert isinstance(stop, scapy_pptp.PPTPStopControlConnectionRequest) and stop.reason == 2


def test_parse_replies_built_by_scapy() -> None:
    ocrp = parse_control(bytes(scapy_pptp.PPTPOutgoingCallReply(
        call_id=128, peer_call_id=4242, result_code=1, error_code=0)))
    assert ocrp.ctrl_type == OCRP
    assert ocrp.name == "Outgoing-Call-Reply"
    assert (ocrp.fields["call_id"], ocrp.fields["peer_call_id"], ocrp.fields["result"]) == (
        128, 4242, 1)
    sccrp = parse_control(bytes(scapy_pptp.PPTPStartControlConnectionReply(
        result_code=1, host_name=b"local", vendor_string=b"linux")))
    assert sccrp.ctrl_type == SCCRP
    assert (sccrp.fields["result"], sccrp.fields["hostname"], sccrp.fields["vendor"]) == (
        1, "local", "linux")
    cdn = parse_control(bytes(scapy_pptp.PPTPCallDisconnectNotify(call_id=128, result_code=3)))
    assert (cdn.ctrl_type, cdn.fields["call_id"], cdn.fields["result"]) == (CDN, 128, 3)
    echo = parse_control(bytes(scapy_pptp.PPTPEchoRequest(identifier=99)))
    assert (echo.ctrl_type, echo.fields["identifier"]) == (ECHORQ, 99)
    assert echo.to_json()["name"] == "Echo-Request"


def test_parse_control_rejects_bad_headers() -> None:
    good = build_ccrq(1)
    with pytest.raises(ProtocolError):
        parse_control(good[:10])
    with pytest.raises(ProtocolError):
        parse_control(good[:4] + b"\0\0\0\0" + good[8:])  # magic cookie
    with pytest.raises(ProtocolError):
        parse_control(good + b"\0")  # length mismatch
    with pytest.raises(ProtocolError):
        parse_control(build_message(OCRQ, b"\0" * 4))  # too short for its type
    unknown = parse_control(build_message(99, b"\0" * 4))
    assert (unknown.ctrl_type, unknown.fields, unknown.name) == (99, {}, "type-99")


def test_control_stream_cuts_by_length_across_segments() -> None:
    stream = build_ocrq(1) + build_ccrq(1) + build_stopccrq()
    cutter = ControlStream()
    out = []
    for byte in stream:
        out += cutter.feed(bytes((byte,)))
    assert [m.ctrl_type for m in out] == [OCRQ, CCRQ, STOPCCRQ]
    assert ControlStream().feed(stream)[0].fields["call_id"] == 1
    with pytest.raises(ProtocolError):
        ControlStream().feed(b"\x00\x05" + b"\0" * 10)


def test_split_points() -> None:
    data = bytes(range(20))
    assert split_points(data, []) == [data]
    assert split_points(data, [15, 5, 5, 0, 20, 99]) == [data[:5], data[5:15], data[15:]]
    assert b"".join(split_points(data, range(1, 20))) == data


def test_gre_encode_layout_and_scapy() -> None:
    payload = ppp_payload(0x0021, b"pns:1")
    packet = gre_encode(128, payload, seq=5, ack=3)
    assert packet[:2] == b"\x30\x81"  # K, S, A, version 1
    assert struct.unpack_from("!HHHII", packet, 2) == (0x880B, len(payload), 128, 5, 3)
    assert packet[16:] == payload
    parsed = GRE_PPTP(packet)
    assert (parsed.key_present, parsed.seqnum_present, parsed.acknum_present) == (1, 1, 1)
    assert (parsed.version, parsed.proto, parsed.payload_len, parsed.call_id) == (
        1, 0x880B, len(payload), 128)
    assert (parsed.sequence_number, parsed.ack_number) == (5, 3)


def test_gre_decode_round_trip_and_scapy_built() -> None:
    assert gre_decode(gre_encode(7, b"\xff\x03\x00\x21x", seq=0)) == GrePacket(
        7, b"\xff\x03\x00\x21x", 0, None, 0x3001)
    ack_only = gre_decode(gre_encode(9, ack=41))
    assert (ack_only.payload, ack_only.seq, ack_only.ack, len(gre_encode(9, ack=41))) == (
        b"", None, 41, 12)
    assert gre_encode(9)[:2] == b"\x20\x01"
    built = bytes(GRE_PPTP(seqnum_present=1, call_id=300, sequence_number=12,
                           payload_len=4) / b"\xff\x03\x00\x21")
    decoded = gre_decode(built)
    assert (decoded.call_id, decoded.seq, decoded.payload) == (300, 12, b"\xff\x03\x00\x21")


@pytest.mark.parametrize(
    "data",
    [
        b"\x20\x01\x88",  # short
        b"\x20\x00\x88\x0b\x00\x00\x00\x01",  # version 0
        b"\x00\x01\x88\x0b\x00\x00\x00\x01",  # no key
        b"\x20\x01\x08\x00\x00\x00\x00\x01",  # not PPP
        b"\xa0\x01\x88\x0b\x00\x00\x00\x01",  # checksum bit
        b"\x30\x01\x88\x0b\x00\x00\x00\x01\x00",  # sequence number truncated
        b"\x20\x81\x88\x0b\x00\x00\x00\x01",  # ack truncated
        b"\x20\x01\x88\x0b\x00\x05\x00\x01abc",  # payload truncated
    ],
)
def test_gre_decode_rejects(data: bytes) -> None:
    with pytest.raises(ValueError):
        gre_decode(data)


def test_strip_ipv4_and_ppp_helpers() -> None:
    header = bytes([0x46]) + b"\0" * 11 + socket.inet_aton("203.0.113.1") + b"\0" * 8
    assert strip_ipv4(header + b"GRE") == ("203.0.113.1", b"GRE")
    with pytest.raises(ValueError):
        strip_ipv4(b"\x60" + b"\0" * 39)
    assert ppp_data(ppp_payload(0x0021, b"d")) == (0x0021, b"d")
    assert ppp_data(b"\x21d") == (0x21, b"d")
    assert ppp_data(b"\xff\x03") == (None, b"")


def test_cli_parser() -> None:
    args = build_parser().parse_args(
        ["203.0.113.1", "--call-id", "5", "--call-id", "5", "--split", "ocrq=1,12,100",
         "--split", "SCCRQ=50", "--no-clear"])
    assert args.call_ids == [5, 5]
    assert dict(args.split) == {OCRQ: [1, 12, 100], SCCRQ: [50]}
    assert args.no_clear and not args.no_stop
    with pytest.raises(SystemExit):
        build_parser().parse_args(["x", "--split", "nope=1"])
    assert parse_events('noise\n{"event": "a"}\n') == [{"event": "a"}]


class FakePac:
    """A tiny PAC on loopback: answers SCCRQ, OCRQ (after an Echo-Request), CCRQ, StopCCRQ."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.chunks: list[int] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def reply(self, conn: socket.socket, message: bytes) -> None:
        ctrl_type = struct.unpack_from("!H", message, 8)[0]
        if ctrl_type == SCCRQ:
            conn.sendall(bytes(scapy_pptp.PPTPStartControlConnectionReply(result_code=1)))
        elif ctrl_type == OCRQ:
            call_id = struct.unpack_from("!H", message, 12)[0]
            conn.sendall(bytes(scapy_pptp.PPTPEchoRequest(identifier=31)))
            conn.sendall(bytes(scapy_pptp.PPTPOutgoingCallReply(
                call_id=128, peer_call_id=call_id, result_code=1)))
        elif ctrl_type == CCRQ:
            call_id = struct.unpack_from("!H", message, 12)[0]
            conn.sendall(bytes(scapy_pptp.PPTPCallDisconnectNotify(call_id=call_id)))
        elif ctrl_type == STOPCCRQ:
            conn.sendall(bytes(scapy_pptp.PPTPStopControlConnectionReply(result_code=1)))

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        buffer = b""
        with conn:
            while data := conn.recv(65536):
                self.chunks.append(len(data))
                buffer += data
                while len(buffer) >= 2 and len(buffer) >= struct.unpack_from("!H", buffer)[0]:
                    length = struct.unpack_from("!H", buffer)[0]
                    message, buffer = buffer[:length], buffer[length:]
                    self.received.append(message)
                    self.reply(conn, message)


@pytest.fixture
def fake_pac() -> Iterator[FakePac]:
    pac = FakePac()
    yield pac
    pac.listener.close()


def test_driver_control_dialogue_against_fake_pac(fake_pac: FakePac) -> None:
    events: list[dict[str, object]] = []
    driver = PnsDriver("127.0.0.1", fake_pac.port, timeout=3, on_event=events.append)
    try:
        driver.connect()
        assert driver.start_control().fields["result"] == 1
        reply = driver.outgoing_call(4242, split=[1, 12, 100], pause=0.05)
        assert (reply.fields["call_id"], reply.fields["peer_call_id"]) == (128, 4242)
        cdn = driver.call_clear(4242)
        assert cdn is not None and cdn.fields["call_id"] == 4242
        stop = driver.stop_control()
        assert stop is not None and stop.ctrl_type == STOPCCRP
    finally:
        driver.close()
    fake_pac.thread.join(timeout=3)
    types = [struct.unpack_from("!H", m, 8)[0] for m in fake_pac.received]
    assert types == [SCCRQ, OCRQ, 6, CCRQ, STOPCCRQ]  # 6: the driver answered the echo
    assert fake_pac.received[1] == build_ocrq(4242, 0)
    assert struct.unpack_from("!I", fake_pac.received[2], 12)[0] == 31
    assert fake_pac.chunks[1:5] == [1, 11, 88, 68]  # the OCRQ arrived in four segments
    sent = [e for e in events if e["event"] == "sent"]
    assert sent[1]["segments"] == [1, 11, 88, 68]
    assert any(e["event"] == "call" and e["peer_call_id"] == 128 for e in events)
