"""The pppd stand-in: async HDLC (RFC 1662) encoding, the streaming decoder, the program."""

from __future__ import annotations

import json
import os
import pty
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from topo.peer_files import STANDIN_FILE, read_status, read_status_dir, write_standin_wrapper
from topo.standin_ppp import (
    FCS_GOOD,
    FCS_INIT,
    HdlcDecoder,
    PppFrame,
    StandinConfig,
    fcs16,
    hdlc_encode,
    hdlc_escape,
    make_payload,
    parse_ppp,
    payload_tag,
    ppp_frame,
)

STANDIN = STANDIN_FILE


def bitwise_fcs16(data: bytes) -> int:
    """The FCS of RFC 1662 computed bit by bit (an independent implementation)."""
    fcs = 0xFFFF
    for byte in data:
        fcs ^= byte
        for _ in range(8):
            fcs = (fcs >> 1) ^ 0x8408 if fcs & 1 else fcs >> 1
    return fcs ^ 0xFFFF


def test_fcs16_check_value() -> None:
    # CRC-16/X-25 (the PPP FCS) of "123456789" is 0x906E.
    assert fcs16(b"123456789") ^ 0xFFFF == 0x906E
    assert fcs16(b"123456789") ^ 0xFFFF == bitwise_fcs16(b"123456789")


def test_fcs16_over_frame_and_fcs_is_good() -> None:
    frame = ppp_frame(0xC021, b"\x01\x01\x00\x04")
    fcs = fcs16(frame) ^ 0xFFFF
    assert fcs16(frame + struct.pack("<H", fcs)) == FCS_GOOD
    assert fcs16(b"", FCS_INIT) == FCS_INIT


def test_escape_flag_escape_and_control_bytes() -> None:
    assert hdlc_escape(b"\x7e\x7d\x00\x1f\x20\x41\xff") == (
        b"\x7d\x5e\x7d\x5d\x7d\x20\x7d\x3f\x20\x41\xff"
    )


def test_encode_layout_matches_independent_computation() -> None:
    payload = b"c1:1"
    raw = b"\xff\x03\x00\x21" + payload
    expected_fcs = struct.pack("<H", bitwise_fcs16(raw))
    expected = b"\x7e" + hdlc_escape(raw + expected_fcs) + b"\x7e"
    encoded = hdlc_encode(0x0021, payload)
    assert encoded == expected
    # FF 7D 23 (0x03 escaped) 00 escaped, 21 ...
    assert encoded.startswith(b"\x7e\xff\x7d\x23\x7d\x20\x21c1:1")
    assert encoded.count(b"\x7e") == 2


def test_encode_never_leaves_flags_or_control_bytes_inside() -> None:
    payload = bytes(range(256))
    inner = hdlc_encode(0x0021, payload)[1:-1]
    assert 0x7E not in inner
    assert min(inner) >= 0x20


def test_decoder_round_trip_every_byte_value() -> None:
    payload = bytes(range(256)) * 2
    frames = HdlcDecoder().feed(hdlc_encode(0x0021, payload))
    assert frames == [PppFrame(0x0021, payload)]


def test_decoder_streaming_byte_by_byte_and_shared_flags() -> None:
    stream = hdlc_encode(0x0021, b"a:1") + hdlc_encode(0xC021, b"\x7e\x7d")[1:]
    decoder = HdlcDecoder()
    out = []
    for byte in stream:
        out += decoder.feed(bytes((byte,)))
    assert out == [PppFrame(0x0021, b"a:1"), PppFrame(0xC021, b"\x7e\x7d")]
    assert decoder.frames == 2
    assert decoder.bad_fcs == 0


@pytest.mark.parametrize("cut", range(1, 14))
def test_decoder_any_cut(cut: int) -> None:
    stream = hdlc_encode(0x0021, b"tag:42")
    decoder = HdlcDecoder()
    assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == [
        PppFrame(0x0021, b"tag:42")
    ]


def test_decoder_drops_bad_fcs_and_keeps_going() -> None:
    bad = bytearray(hdlc_encode(0x0021, b"x:1"))
    bad[6] ^= 0x01
    decoder = HdlcDecoder()
    frames = decoder.feed(bytes(bad) + hdlc_encode(0x0021, b"x:2"))
    assert frames == [PppFrame(0x0021, b"x:2")]
    assert decoder.bad_fcs == 1


def test_decoder_counts_runts_and_aborts_and_ignores_empty_frames() -> None:
    decoder = HdlcDecoder()
    assert decoder.feed(b"\x7e\x7e\x7e\x01\x02\x7e") == []
    assert decoder.runts == 1
    assert decoder.feed(b"\xff\x03\x00\x21abc\x7d\x7e") == []  # aborted by 7D 7E
    assert decoder.runts == 2
    assert decoder.feed(hdlc_encode(0x0021, b"ok:1")) == [PppFrame(0x0021, b"ok:1")]


def test_parse_ppp_compressed_fields() -> None:
    assert parse_ppp(b"\xff\x03\xc0\x21\x01") == PppFrame(0xC021, b"\x01")
    assert parse_ppp(b"\x00\x21data") == PppFrame(0x0021, b"data")  # no address/control
    assert parse_ppp(b"\x21data") == PppFrame(0x21, b"data")  # one-byte protocol
    assert parse_ppp(b"\xff\x03") is None
    assert parse_ppp(b"\xff\x03\x00") is None


def test_payload_tags() -> None:
    assert make_payload("c1", 7) == b"c1:7"
    assert payload_tag(b"c1:7") == "c1"
    assert payload_tag(b"srv27:echo:c1:7") == "srv27"
    assert payload_tag(b"no tag") is None
    assert payload_tag(b"\xff\xfe:1") is None


def read_frames(fd: int, want: int, timeout: float = 5) -> list[PppFrame]:
    decoder = HdlcDecoder()
    frames: list[PppFrame] = []
    deadline = time.monotonic() + timeout
    while len(frames) < want and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            data = os.read(fd, 4096)
            if not data:
                break
            frames += decoder.feed(data)
    return frames


def test_program_on_pipes_sends_receives_echoes_and_writes_status(tmp_path: Path) -> None:
    status = tmp_path / "s.json"
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), "--tag", "me", "--count", "3", "--interval", "0.01",
         "--echo", "--status", str(status), "local", "115200"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(hdlc_encode(0x0021, b"peer:1") + hdlc_encode(0x0021, b"peer:2"))
        proc.stdin.flush()
        frames = read_frames(proc.stdout.fileno(), 5)
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
    payloads = sorted(f.payload for f in frames)
    assert payloads == sorted([b"me:1", b"me:2", b"me:3", b"me:echo:peer:1", b"me:echo:peer:2"])
    state = json.loads(status.read_text())
    assert state["sent"] == 3
    assert state["echoed"] == 2
    assert state["received"] == 2
    assert state["received_tags"] == {"peer": 2}
    assert state["state"] == "done:eof"
    assert state["argv"][-2:] == ["local", "115200"]


def test_wrapper_on_a_pty_like_pptpd_with_pppd_arguments(tmp_path: Path) -> None:
    config = StandinConfig(tag="srv{pid}", count=2, interval=0.01, status_dir=str(tmp_path))
    wrapper = write_standin_wrapper(tmp_path / "standin.sh", config)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(wrapper), "local", "file", "opts", "115200", "ipparam", "203.0.113.2"],
        stdin=slave, stdout=slave, close_fds=True,
    )
    os.close(slave)
    try:
        frames = read_frames(master, 2)
        os.write(master, hdlc_encode(0x0021, b"cli:1"))
        time.sleep(0.3)
        status_file = tmp_path / f"standin-{proc.pid}.json"
        state = read_status(status_file)
        assert state is not None
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    # Raw mode: the line discipline neither held nor mangled the binary frames.
    assert [f.payload for f in frames] == [f"srv{proc.pid}:1".encode(), f"srv{proc.pid}:2".encode()]
    assert state["received_tags"] == {"cli": 1}
    assert state["tty"] is not None and state["tty"].startswith("/dev/pts/")
    assert state["argv"][-2:] == ["ipparam", "203.0.113.2"]
    final = read_status(status_file)
    assert final is not None and final["state"] == "done:SIGTERM"


def test_status_dir_lists_stand_ins_in_launch_order_not_start_up_order(tmp_path: Path) -> None:
    """pptpd forks a second stand-in a moment after the first; the second can finish the
    interpreter's start-up first (seen: 0.17 ms ahead), so the launch order is the PIDs'."""
    for pid, started in ((27, 1000.0002), (28, 1000.0000), (103, 999.0)):
        (tmp_path / f"standin-{pid}.json").write_text(
            json.dumps({"pid": pid, "tag": f"srv{pid}", "started": started}))
    assert [s["pid"] for s in read_status_dir(tmp_path)] == [27, 28, 103]
