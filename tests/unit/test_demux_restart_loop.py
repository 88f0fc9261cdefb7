"""Restarts with the GRE demultiplexer attached, closed loop: the real app with its store
on the fake switch, the demultiplexer's port leading to the real BPF program (run by the
kernel on each frame), peers that answer as real ones do.

A restarted controller knows no neighbour until it hears from it, and keeps no record of
the switch's return entries (one per client, from the demultiplexer's port): it must find
them there, and a return entry it cannot install must not take its client's calls to the
demux path, where their GRE would find no way back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from alg.events import EntryKind
from demux import bpf
from demux.link import HEARTBEAT, LINK_DOWN
from demux.table import Demux
from ryu_apps import switch
from ryu_apps.framework import ofproto_v1_3 as ofp
from ryu_apps.framework import ofproto_v1_3_parser as parser
from tests.unit.app_env import GW_MAC, IN1, IN2, PUBLIC, SERVER
from tests.unit.test_closed_loop import (
    CLIENT1,
    CLIENT1_MAC,
    CLIENT2,
    CLIENT2_MAC,
    Dialled,
    GreFrame,
    Lab,
    build_lab,
    check_clean,
)
from tests.unit.test_demux_loop import DMX, TC_ACT_REDIRECT, Program, beat
from tests.unit.test_demux_loop import pinned as pinned  # the fixture
from tests.unit.test_gre_demux import _bpf_works
from tests.unit.test_restart_loop import restart_controller, restart_switch

pytestmark = pytest.mark.skipif(_bpf_works() is not None, reason=str(_bpf_works()))

STATS = 5  # the app's stats_interval in these labs: its core ticks this often


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, pinned: str, tmp_path: Path
        ) -> Iterator[tuple[Lab, Program]]:
    built = build_lab(monkeypatch, {"dmx": DMX}, gre_demux_port="dmx", gre_demux_dir=pinned,
                      state_file=str(tmp_path / "state.sqlite"))
    program = Program(built, Demux.open(pinned))
    built.switch.attach(DMX, program)
    yield built, program
    check_clean(built)
    program.demux.close()


def return_cookies(lab: Lab) -> set[int]:
    return {e.cookie for e in lab.switch.table
            if (switch.decode_cookie(e.cookie) or (None,))[0] is EntryKind.DEMUX_RETURN}


def server_sends(lab: Lab, calls: list[Dialled], sequence: int) -> None:
    lab.forget()
    for d in calls:
        lab.pac.send_gre(d.server_call, sequence)
    lab.settle()


def delivered(lab: Lab, port: int) -> list[GreFrame]:
    return lab.gre_out_of(port)


C1 = GreFrame(GW_MAC, CLIENT1_MAC, SERVER, CLIENT1, 4242, 63)
C2 = GreFrame(GW_MAC, CLIENT2_MAC, SERVER, CLIENT2, 4242, 63)


def test_calls_on_the_demux_path_live_through_a_controller_restart(
        lab: tuple[Lab, Program]) -> None:
    gw, _ = lab
    beat(gw, HEARTBEAT)
    d1 = gw.dial(gw.client1, 4242)
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    returns = return_cookies(gw)
    assert len(returns) == 2
    app = restart_controller(gw)
    assert return_cookies(gw) == returns  # found on the switch, neither removed nor added
    beat(gw, 2 * HEARTBEAT)
    assert app.demux.up and app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    server_sends(gw, [d1, d2], 1)
    assert delivered(gw, IN1) == [C1] and delivered(gw, IN2) == [C2]
    assert gw.gre_packet_ins() == []
    assert app.counters.entries_not_installed == 0


def test_a_pair_moves_to_the_demux_path_after_a_controller_restart(
        lab: tuple[Lab, Program]) -> None:
    """The issue's case: one call up on the flow path, the controller restarts, a second
    client calls the same server with the same Call ID: the pair moves to the demux path,
    and the first client's GRE must still reach it (it got none before the fix)."""
    gw, _ = lab
    beat(gw, HEARTBEAT)
    d1 = gw.dial(gw.client1, 4242)
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "flow"
    app = restart_controller(gw)
    beat(gw, 2 * HEARTBEAT)
    assert app.demux.up
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    assert d2.server_call.peer_call_id != 4242
    for sequence in range(1, 4 * STATS):
        server_sends(gw, [d1, d2], sequence)
        assert delivered(gw, IN1) == [C1], sequence
        assert delivered(gw, IN2) == [C2], sequence
        gw.wait(1)
    assert app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    server_sends(gw, [d1, d2], 99)
    assert gw.gre_packet_ins() == []


def test_a_switch_restart_after_a_controller_restart_with_the_demultiplexer(
        lab: tuple[Lab, Program]) -> None:
    """The restarted controller has not heard from the clients when the switch comes back
    empty: it cannot install their return entries yet, so the pair takes the controller
    path (whose packets make it resolve the clients), then the demux path again."""
    gw, _ = lab
    beat(gw, HEARTBEAT)
    d1 = gw.dial(gw.client1, 4242)
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    app = restart_controller(gw)
    beat(gw, 2 * HEARTBEAT)
    restart_switch(gw)
    beat(gw, 2 * HEARTBEAT)
    assert app.counters.entries_not_installed >= 2
    assert app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"
    for sequence in range(1, 4 * STATS):
        server_sends(gw, [d1, d2], sequence)
        assert delivered(gw, IN1) == [C1], sequence
        assert delivered(gw, IN2) == [C2], sequence
        gw.wait(1)
        beat(gw, HEARTBEAT)
    assert app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    assert len(return_cookies(gw)) == 2
    server_sends(gw, [d1, d2], 99)
    assert gw.gre_packet_ins() == []
    assert delivered(gw, IN1) == [C1] and delivered(gw, IN2) == [C2]


def test_a_switch_restart_with_the_demultiplexer(lab: tuple[Lab, Program]) -> None:
    gw, _ = lab
    beat(gw, HEARTBEAT)
    d1 = gw.dial(gw.client1, 4242)
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    cookies = {e.cookie for e in gw.switch.table}
    restart_switch(gw)
    assert {e.cookie for e in gw.switch.table} == cookies
    beat(gw, HEARTBEAT)
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    server_sends(gw, [d1, d2], 1)
    assert delivered(gw, IN1) == [C1] and delivered(gw, IN2) == [C2]
    assert gw.gre_packet_ins() == []


def reattach(directory: str, program: Program) -> Demux:
    """Detach the demultiplexer and attach it again: its pins give way to a new program
    and an empty table, which the port now runs."""
    for name in ("program", "table", "counters"):
        os.unlink(f"{directory}/{name}")
    fresh = Demux.load(1024)
    fresh.pin(directory)
    program.demux.close()
    program.demux = fresh
    return fresh


class ProgramOn(Program):
    """The program behind another port of the switch."""

    def __init__(self, lab: Lab, demux: Demux, port: int) -> None:
        super().__init__(lab, demux)
        self.port = port

    def receive(self, frame: bytes) -> None:
        verdict, out = bpf.test_run(self.demux.program, frame)
        self.verdicts.append(verdict)
        if verdict == TC_ACT_REDIRECT:
            self.lab.switch.inject(self.port, out)


def port_status(lab: Lab, reason: int, number: int, state: int = 0, speed: int = 0
                ) -> None:
    desc = parser.OFPPort(number, "02:00:00:00:00:63", b"dmx", 0, state, 0, 0, 0, 0, speed,
                          0)
    lab.switch._to_app(parser.OFPPortStatus(lab.switch, reason=reason, desc=desc))
    lab.settle()


def test_a_reattached_demultiplexer_gets_its_table_when_the_port_comes_back(
        lab: tuple[Lab, Program], pinned: str) -> None:
    """The app held the old table's descriptors: its writes (the probe's entry among
    them) reached only the old table, and the new program dropped every packet as of an
    unknown key, until an error that never came. The port's return makes it open the
    new one, and the heartbeat's answer brings the calls' entries back."""
    gw, program = lab
    beat(gw, HEARTBEAT)
    d1 = gw.dial(gw.client1, 4242)
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    fresh = reattach(pinned, program)
    port_status(gw, ofp.OFPPR_DELETE, DMX)
    beat(gw, 2 * HEARTBEAT)
    assert not gw.app.demux.up
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"
    port_status(gw, ofp.OFPPR_ADD, DMX)
    beat(gw, 2 * HEARTBEAT)
    assert gw.app.demux.up
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    server_sends(gw, [d1, d2], 1)
    assert delivered(gw, IN1) == [C1] and delivered(gw, IN2) == [C2]
    assert gw.gre_packet_ins() == []
    assert fresh.counts()["unknown_key"] == 0
    for public_id in (4242, d2.server_call.peer_call_id):
        assert (fresh.entry_counts(SERVER, PUBLIC, public_id) or (0, 0))[0] == 1, public_id


def test_a_demultiplexer_port_back_under_another_number_gets_its_entries_there(
        monkeypatch: pytest.MonkeyPatch, pinned: str, tmp_path: Path) -> None:
    gw = build_lab(monkeypatch, {"dmx": DMX, "dmx2": DMX - 1}, gre_demux_port="dmx",
                   gre_demux_dir=pinned, state_file=str(tmp_path / "state.sqlite"))
    program = Program(gw, Demux.open(pinned))
    gw.switch.attach(DMX, program)
    moved = ProgramOn(gw, program.demux, DMX - 1)
    try:
        beat(gw, HEARTBEAT)
        d1 = gw.dial(gw.client1, 4242)
        d2 = gw.dial(gw.client2, 4242, src_port=40001)
        program.running = False
        gw.switch.attach(DMX - 1, moved)
        port_status(gw, ofp.OFPPR_DELETE, DMX)
        port_status(gw, ofp.OFPPR_ADD, DMX - 1)
        beat(gw, 2 * HEARTBEAT)
        assert gw.app.demux.port == DMX - 1 and gw.app.demux.up
        assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
        server_sends(gw, [d1, d2], 1)
        assert delivered(gw, IN1) == [C1] and delivered(gw, IN2) == [C2]
        assert gw.gre_packet_ins() == [] and gw.switch.delivered[DMX] == []
        check_clean(gw)
    finally:
        program.demux.close()


def test_a_change_of_the_demultiplexers_port_that_keeps_it_up_changes_nothing(
        lab: tuple[Lab, Program]) -> None:
    """The switch reports the port modified (its speed, a configuration bit, the link
    still up, the same number): the table stays open, the heartbeat keeps finding the
    demultiplexer up and the shared pair stays on the demux path. Each such message
    used to close the table and take every shared pair to the controller and back."""
    gw, _ = lab
    beat(gw, HEARTBEAT)
    d1 = gw.dial(gw.client1, 4242)
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    table = gw.app.demux._demux
    for speed in (1000, 10000, 0):
        port_status(gw, ofp.OFPPR_MODIFY, DMX, speed=speed)
        beat(gw, HEARTBEAT)
        assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    beat(gw, 2 * HEARTBEAT)
    assert gw.app.demux.counters.demux_down_events == 0
    assert gw.app.demux._demux is table and gw.app.demux.up
    server_sends(gw, [d1, d2], 1)
    assert delivered(gw, IN1) == [C1] and delivered(gw, IN2) == [C2]
    assert gw.gre_packet_ins() == []


def test_the_demultiplexers_link_down_is_its_port_gone_and_up_again_back(
        lab: tuple[Lab, Program]) -> None:
    gw, _ = lab
    beat(gw, HEARTBEAT)
    d1 = gw.dial(gw.client1, 4242)
    d2 = gw.dial(gw.client2, 4242, src_port=40001)
    port_status(gw, ofp.OFPPR_MODIFY, DMX, state=ofp.OFPPS_LINK_DOWN)
    sent = gw.app.demux.counters.demux_probes_sent
    beat(gw, 2 * HEARTBEAT)
    assert gw.app.demux.port is None and not gw.app.demux.up
    assert gw.app.demux.counters.demux_probes_sent == sent  # no probe into a dead link
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"
    server_sends(gw, [d1, d2], 1)
    assert delivered(gw, IN1) == [C1] and delivered(gw, IN2) == [C2]
    port_status(gw, ofp.OFPPR_MODIFY, DMX, state=ofp.OFPPS_LIVE)
    beat(gw, 2 * HEARTBEAT)
    assert gw.app.demux.port == DMX and gw.app.demux.up
    assert gw.app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
    server_sends(gw, [d1, d2], 2)
    assert delivered(gw, IN1) == [C1] and delivered(gw, IN2) == [C2]
    assert gw.gre_packet_ins() == []
    assert gw.app.demux.counters.demux_down_events == 1
    assert LINK_DOWN == ofp.OFPPS_LINK_DOWN


def test_a_port_that_is_not_the_demultiplexers_changes_nothing(
        lab: tuple[Lab, Program]) -> None:
    gw, _ = lab
    beat(gw, HEARTBEAT)
    table = gw.app.demux._demux
    desc = parser.OFPPort(IN1, "02:00:00:00:00:01", b"in1", 0, 0, 0, 0, 0, 0, 0, 0)
    gw.switch._to_app(parser.OFPPortStatus(gw.switch, reason=ofp.OFPPR_MODIFY, desc=desc))
    gw.settle()
    beat(gw, HEARTBEAT)
    assert gw.app.demux._demux is table and gw.app.demux.up
    assert gw.app.demux.counters.demux_down_events == 0


def test_a_missing_table_is_counted_each_time_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from alg.config import load
    from demux.link import DemuxLink
    base = {"inside_ports": "c1", "outside_port": "out", "inside_gateway": "192.168.1.254",
            "inside_subnet": "192.168.1.0/24", "outside_subnet": "203.0.113.0/24",
            "public_ips": "203.0.113.2", "gre_demux_port": "dmx",
            "gre_demux_dir": str(tmp_path / "none")}
    link = DemuxLink(load(base))
    link.port = DMX
    for now in range(5):
        assert link.probe(float(now)) is not None
    assert link.counters.demux_errors == 5
    assert len([r for r in caplog.records if "nat.gre_demux_dir" in r.getMessage()]) == 1
