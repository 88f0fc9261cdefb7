"""Restarts with the GRE demultiplexer attached, closed loop: the real app with its store
on the fake switch, the demultiplexer's port leading to the real BPF program (run by the
kernel on each frame), peers that answer as real ones do.

A restarted controller knows no neighbour until it hears from it, and keeps no record of
the switch's return entries (one per client, from the demultiplexer's port): it must find
them there, and a return entry it cannot install must not take its client's calls to the
demux path, where their GRE would find no way back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alg.events import EntryKind
from ryu_apps import switch
from ryu_apps.demux_link import HEARTBEAT
from ryu_apps.gre_demux import Demux
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
from tests.unit.test_demux_loop import DMX, Program, beat
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
