"""The GRE demultiplexer's program, run by the kernel on test packets (BPF_PROG_TEST_RUN):
what it restores, what it drops, what it counts."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alg.errors import BpfError
from demux import bpf
from demux.asm import Asm
from demux.program import TC_ACT_SHOT, gre_frame
from demux.table import Demux
from ryu_apps.packets import checksum

TC_ACT_REDIRECT = 7
SERVER = IPv4Address("203.0.113.1")
PUBLIC = IPv4Address("203.0.113.2")
CLIENTS = [IPv4Address(f"192.168.1.{i}") for i in (1, 2, 3)]
GW, SRV_MAC = b"\x02\x00\x5e\x00\x01\xfe", b"\x0a\x00\x00\x00\x00\x01"


def _bpf_works() -> str | None:
    if os.geteuid() != 0:
        return "needs root to load BPF programs"
    try:
        Demux.load(16).close()
    except BpfError as exc:
        return f"this kernel refuses the BPF program or maps: {exc}"
    return None


pytestmark = pytest.mark.skipif(_bpf_works() is not None, reason=str(_bpf_works()))


@pytest.fixture
def demux() -> Iterator[Demux]:
    loaded = Demux.load(1024)
    try:
        yield loaded
    finally:
        loaded.close()


def frame(call_id: int, payload: bytes = b"ppp", **kw: object) -> bytes:
    return gre_frame(GW, SRV_MAC, SERVER, PUBLIC, call_id, payload, **kw)  # type: ignore[arg-type]


def test_three_clients_with_the_same_call_id_get_their_own_packets_back(demux: Demux) -> None:
    """The seed's case: three clients all chose Call ID 1; the gateway gave them 1, 2, 3
    on the pair; the server's packets for 2 and 3 go back to Call ID 1 of their client."""
    for public_id, client in enumerate(CLIENTS, start=1):
        demux.set(SERVER, PUBLIC, public_id, client, 1)
    for public_id, client in enumerate(CLIENTS, start=1):
        before = frame(public_id, b"data-%d" % public_id)
        verdict, after = bpf.test_run(demux.program, before)
        assert verdict == TC_ACT_REDIRECT
        ip, gre = after[14:34], after[34:]
        assert ip[16:20] == client.packed and ip[12:16] == SERVER.packed
        assert checksum(ip) == 0
        assert struct.unpack("!H", gre[6:8])[0] == 1
        assert after[:14] == before[:14] and gre[:6] == before[34:40]
        assert gre[8:] == before[42:] and ip[8] == before[22]  # sequence, payload; TTL
        assert demux.entry_counts(SERVER, PUBLIC, public_id) == (1, len(before))
    assert demux.counts()["demuxed"] == 3


def test_a_key_without_entry_and_a_released_one_are_dropped_and_counted(demux: Demux) -> None:
    demux.set(SERVER, PUBLIC, 7, CLIENTS[0], 7)
    assert bpf.test_run(demux.program, frame(8))[0] == TC_ACT_SHOT
    assert demux.remove(SERVER, PUBLIC, 7)
    assert not demux.remove(SERVER, PUBLIC, 7)
    assert bpf.test_run(demux.program, frame(7))[0] == TC_ACT_SHOT
    assert demux.counts()["unknown_key"] == 2
    assert demux.counts()["demuxed"] == 0


def test_the_key_includes_server_and_public_address(demux: Demux) -> None:
    demux.set(SERVER, PUBLIC, 5, CLIENTS[0], 5)
    other = gre_frame(GW, SRV_MAC, IPv4Address("198.51.100.9"), PUBLIC, 5, b"x")
    assert bpf.test_run(demux.program, other)[0] == TC_ACT_SHOT
    other = gre_frame(GW, SRV_MAC, SERVER, IPv4Address("203.0.113.3"), 5, b"x")
    assert bpf.test_run(demux.program, other)[0] == TC_ACT_SHOT


def _mutate(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([value]) + data[at + 1:]


@pytest.mark.parametrize(("what", "mutated"), [
    ("ARP ethertype", lambda f: f[:12] + b"\x08\x06" + f[14:]),
    ("IP options", lambda f: _mutate(f, 14, 0x46)),
    ("UDP", lambda f: _mutate(f, 23, 17)),
    ("more fragments", lambda f: _mutate(f, 20, 0x20)),
    ("fragment offset", lambda f: _mutate(f, 21, 0x01)),
    ("GRE version 0", lambda f: _mutate(f, 35, 0x00)),
    ("no key", lambda f: _mutate(f, 34, 0x10)),
    ("not PPP", lambda f: f[:36] + b"\x08\x00" + f[38:]),
])
def test_anything_but_enhanced_gre_over_plain_ipv4_is_dropped(
        demux: Demux, what: str, mutated: object) -> None:
    demux.set(SERVER, PUBLIC, 9, CLIENTS[0], 9)
    packet = mutated(frame(9))  # type: ignore[operator]
    assert bpf.test_run(demux.program, packet)[0] == TC_ACT_SHOT, what
    assert demux.counts()["not_pptp_gre"] == 1


@pytest.mark.parametrize("packet", [
    frame(9)[:34], frame(9)[:38], frame(9)[:41],
    frame(9)[:12] + b"\x08\x06" + frame(9)[14:20],  # the kernel's test run wants a whole
])                                                  # IPv4 header when the type says IPv4
def test_a_frame_too_short_for_the_headers_is_dropped(demux: Demux, packet: bytes) -> None:
    demux.set(SERVER, PUBLIC, 9, CLIENTS[0], 9)
    assert bpf.test_run(demux.program, packet)[0] == TC_ACT_SHOT
    assert demux.counts()["truncated"] == 1


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=14, max_size=200), call_id=st.integers(0, 0xFFFF))
def test_arbitrary_frames_are_delivered_only_by_an_entry(data: bytes, call_id: int) -> None:
    demux = Demux.load(16)
    try:
        demux.set(SERVER, PUBLIC, call_id, CLIENTS[0], 1)
        for packet in (data, frame(call_id)[:42] + data):
            try:
                verdict, out = bpf.test_run(demux.program, packet)
            except BpfError as exc:  # the kernel builds no test packet of some shapes
                assert exc.errno == errno.EINVAL
                continue
            if verdict == TC_ACT_REDIRECT:
                assert packet[26:34] == SERVER.packed + PUBLIC.packed
                assert packet[40:42] == struct.pack("!H", call_id)
                assert out[30:34] == CLIENTS[0].packed
            else:
                assert verdict == TC_ACT_SHOT
    finally:
        demux.close()


def test_the_program_and_maps_outlive_their_loader_when_pinned(tmp_path: object) -> None:
    mount = f"/tmp/pptp-alg-test-bpffs-{os.getpid()}"
    os.makedirs(mount, exist_ok=True)
    if os.system(f"mount -t bpf bpf {mount}") != 0:
        pytest.skip("cannot mount a BPF filesystem here")
    try:
        loaded = Demux.load(16)
        loaded.pin(mount)
        loaded.set(SERVER, PUBLIC, 3, CLIENTS[2], 1)
        loaded.close()
        again = Demux.open(mount)
        try:
            verdict, out = bpf.test_run(again.program, frame(3))
            assert verdict == TC_ACT_REDIRECT and out[30:34] == CLIENTS[2].packed
            assert again.counts()["demuxed"] == 1
        finally:
            again.close()
    finally:
        os.system(f"umount {mount}")
        os.rmdir(mount)


def test_jumps_are_relative_to_the_next_instruction() -> None:
    asm = Asm()
    asm.jump("==", 1, 0, "end")
    asm.mov_imm(0, 1)
    asm.label("end")
    asm.exit()
    code = asm.assemble({})
    op, regs, off, imm = struct.unpack("<BBhi", code[:8])
    assert (op, regs, off, imm) == (0x15, 1, 1, 0)
