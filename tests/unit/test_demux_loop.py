"""The app with the GRE demultiplexer on the fake switch: the demultiplexer's port leads
to the real BPF program, run by the kernel on each frame (BPF_PROG_TEST_RUN), which
hands what it redirects back to the switch. Heartbeat, table, paths and counts."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from demux import bpf
from demux import link as demux_link
from demux.link import DEAD_AFTER, HEARTBEAT
from demux.program import gre_frame
from demux.table import Demux
from tests.unit.test_closed_loop import (
    CLIENT1,
    CLIENT1_MAC,
    CLIENT2,
    CLIENT2_MAC,
    GW_MAC,
    IN1,
    IN2,
    PUBLIC,
    SERVER,
    GreFrame,
    Lab,
    build_lab,
    check_clean,
)
from tests.unit.test_gre_demux import _bpf_works

pytestmark = pytest.mark.skipif(_bpf_works() is not None, reason=str(_bpf_works()))

DMX = 99
TC_ACT_REDIRECT = 7


class Program:
    """What sits behind the demultiplexer's port: the pinned program, or nothing."""

    def __init__(self, lab: Lab, demux: Demux) -> None:
        self.lab = lab
        self.demux = demux
        self.running = True
        self.verdicts: list[int] = []

    def receive(self, frame: bytes) -> None:
        if not self.running:
            return
        verdict, out = bpf.test_run(self.demux.program, frame)
        self.verdicts.append(verdict)
        if verdict == TC_ACT_REDIRECT:
            self.lab.switch.inject(DMX, out)


@pytest.fixture
def pinned() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="pptp-alg-demux-")
    if subprocess.run(["mount", "-t", "bpf", "bpf", directory], check=False).returncode:
        os.rmdir(directory)
        pytest.skip("cannot mount a BPF filesystem here")
    try:
        loaded = Demux.load(1024)
        loaded.pin(directory)
        loaded.close()
        yield directory
    finally:
        subprocess.run(["umount", directory], check=False)
        os.rmdir(directory)


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, pinned: str) -> Iterator[tuple[Lab, Program]]:
    built = build_lab(monkeypatch, {"dmx": DMX}, gre_demux_port="dmx", gre_demux_dir=pinned)
    program = Program(built, Demux.open(pinned))
    built.switch.attach(DMX, program)
    yield built, program
    check_clean(built)
    program.demux.close()


def beat(lab: Lab, seconds: float) -> None:
    """Let ``seconds`` pass in heartbeats."""
    for _ in range(round(seconds / HEARTBEAT)):
        lab.clock.now += HEARTBEAT
        lab.app.heartbeat()
        lab.settle()


def test_the_heartbeat_goes_round_and_brings_the_demultiplexer_up(
        lab: tuple[Lab, Program]) -> None:
    gw, program = lab
    assert not gw.app.demux.up
    beat(gw, HEARTBEAT)
    assert gw.app.demux.up and program.verdicts == [TC_ACT_REDIRECT]
    counters = gw.app.demux.counters
    assert counters.demux_probes_sent == counters.demux_probes_answered == 1
    assert counters.demux_up_events == 1


def test_the_seeds_shared_pair_goes_through_the_demultiplexer_only(
        lab: tuple[Lab, Program]) -> None:
    gw, _ = lab
    beat(gw, HEARTBEAT)
    d1 = gw.dial(gw.client1, 4242)
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    b2 = d2.server_call.peer_call_id
    assert b2 != 4242
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    gw.forget()
    for seq in (1, 2):
        gw.pac.send_gre(d1.server_call, seq)
        gw.pac.send_gre(d2.server_call, seq)
    gw.settle()
    assert gw.gre_packet_ins() == []
    assert gw.gre_out_of(IN1) == [GreFrame(GW_MAC, CLIENT1_MAC, SERVER, CLIENT1, 4242, 63)] * 2
    assert gw.gre_out_of(IN2) == [GreFrame(GW_MAC, CLIENT2_MAC, SERVER, CLIENT2, 4242, 63)] * 2
    gw.wait(5)  # a statistics round: each call gets its table entry's counts
    calls = {c.conn.client_ip: c for c in gw.app.core.calls()}
    assert calls[CLIENT2].inbound_packets == 2 and calls[CLIENT2].controller_path_packets == 0


def test_a_silent_demultiplexer_hands_the_pair_to_the_controller_and_back(
        lab: tuple[Lab, Program]) -> None:
    gw, program = lab
    beat(gw, HEARTBEAT)
    d1 = gw.dial(gw.client1, 4242)
    gw.dial(gw.client2, 4242, src_port=40001)
    program.running = False
    beat(gw, DEAD_AFTER + 2 * HEARTBEAT)
    assert not gw.app.demux.up
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"
    gw.forget()
    gw.pac.send_gre(d1.server_call, 7)
    gw.settle()
    assert len(gw.gre_packet_ins()) == 1
    assert gw.gre_out_of(IN1) == [GreFrame(GW_MAC, CLIENT1_MAC, SERVER, CLIENT1, 4242, 63)]
    program.running = True
    beat(gw, HEARTBEAT)
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    assert gw.app.demux.counters.demux_down_events == 1


def test_an_ended_calls_entry_leaves_the_table(lab: tuple[Lab, Program]) -> None:
    gw, program = lab
    beat(gw, HEARTBEAT)
    gw.dial(gw.client1, 4242)
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    b2 = d2.server_call.peer_call_id
    assert program.demux.entry_counts(SERVER, PUBLIC, b2) == (0, 0)
    d2.link.clear(d2.call)
    gw.settle()
    assert program.demux.entry_counts(SERVER, PUBLIC, b2) is None
    gw.forget()
    gw.pac.send_gre(d2.server_call, 9)
    gw.settle()
    assert gw.gre_out_of(IN2) == [] and gw.gre_packet_ins() == []
    assert program.demux.counts()["unknown_key"] == 1


def test_an_entry_whose_deletion_was_lost_is_gone_when_the_demultiplexer_returns(
        lab: tuple[Lab, Program]) -> None:
    """A call ended while its deletion could not be written: when the demultiplexer
    answers again, the table keeps only the calls that stand (and the probe)."""
    gw, program = lab
    beat(gw, HEARTBEAT)
    gw.dial(gw.client1, 4242)
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    program.demux.set(SERVER, PUBLIC, 999, CLIENT2, 77)  # a lost deletion
    program.running = False
    beat(gw, DEAD_AFTER + 2 * HEARTBEAT)
    program.running = True
    beat(gw, HEARTBEAT)
    assert gw.app.demux.up
    assert program.demux.entry_counts(SERVER, PUBLIC, 999) is None
    assert program.demux.entry_counts(SERVER, PUBLIC, d2.server_call.peer_call_id) is not None
    assert program.demux.entry_counts(SERVER, PUBLIC, 4242) is not None


def test_packets_the_program_never_saw_are_the_ports_transmissions_it_did_not_count(
        lab: tuple[Lab, Program], monkeypatch: pytest.MonkeyPatch) -> None:
    gw, _ = lab
    real = demux_link.port_transmitted
    assert real("no-such-port") is None
    assert isinstance(real("lo"), int)
    beat(gw, 3 * HEARTBEAT)  # three probes, each counted by the program
    monkeypatch.setattr(demux_link, "port_transmitted", lambda _port: 10)
    assert gw.app.demux.program_counts()["not_seen"] == 7
    monkeypatch.setattr(demux_link, "port_transmitted", lambda _port: None)
    assert "not_seen" not in gw.app.demux.program_counts()


def test_a_frame_from_the_demultiplexers_port_that_is_no_heartbeat_is_counted_and_left(
        lab: tuple[Lab, Program]) -> None:
    gw, _ = lab
    frame = gre_frame(b"\xff" * 6, b"\x02" * 6, SERVER, CLIENT1, 5, b"x")
    gw.app.handle_frame(gw.switch, DMX, frame)
    gw.app.handle_frame(gw.switch, DMX, b"\x00" * 10)
    assert gw.app.demux.counters.demux_unexpected_frames == 2
    assert not gw.app.demux.up and gw.app.counters.undecodable_frames == 0
