"""Reading the datapath's connection table (``ryu_apps.conntrack_view``): the parser on
lines Open vSwitch 3.1 printed for a lab's zone, and the reader against stand-in
``ovs-appctl`` programs (real processes: missing, failing, silent, endless)."""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from pathlib import Path

import eventlet
import pytest
from eventlet.green import subprocess as green_subprocess

from ryu_apps import conntrack_view, rest
from ryu_apps.conntrack_view import Connection, Table, parse, parse_line

ZONE = 5173
# ``ovs-appctl dpctl/dump-conntrack -s netdev@ovs-netdev zone=5173``, two lab clients
# with a TCP connection and a UDP exchange each to 203.0.113.1:8000.
TCP1 = ("tcp,orig=(src=192.168.1.1,dst=203.0.113.1,sport=40000,dport=8000),reply=(src=203.0"
        ".113.1,dst=203.0.113.2,sport=8000,dport=2037),zone=5173,timeout=86395,protoinfo=(stat"
        "e=ESTABLISHED)")
UDP1 = ("udp,orig=(src=192.168.1.1,dst=203.0.113.1,sport=40000,dport=8000),reply=(src=203.0"
        ".113.1,dst=203.0.113.2,sport=8000,dport=1693),zone=5173,timeout=25")
TCP2 = ("tcp,orig=(src=192.168.1.2,dst=203.0.113.1,sport=40001,dport=8000),reply=(src=203.0"
        ".113.1,dst=203.0.113.2,sport=8000,dport=2914),zone=5173,timeout=86397,protoinfo=(stat"
        "e=ESTABLISHED)")
TIME_WAIT = ("tcp,orig=(src=192.168.1.1,dst=203.0.113.1,sport=46224,dport=9),reply=(src=203."
             "0.113.1,dst=203.0.113.2,sport=9,dport=1909),zone=5173,timeout=29,protoinfo=(st"
             "ate=TIME_WAIT)")
# Without ``-s`` (no timeout) and with ``-m`` (more fields, protoinfo of two states).
PLAIN = ("udp,orig=(src=192.168.1.2,dst=203.0.113.1,sport=40001,dport=8000),reply=(src=203."
         "0.113.1,dst=203.0.113.2,sport=8000,dport=2599),zone=5173")
MORE = ("tcp,orig=(src=192.168.1.2,dst=203.0.113.1,sport=40001,dport=8000),reply=(src=203.0"
        ".113.1,dst=203.0.113.2,sport=8000,dport=2914),id=0,zone=5173,status=0,protoinfo=(stat"
        "e_orig=ESTABLISHED,state_reply=ESTABLISHED,wscale_orig=10,wscale_reply=10,flags_orig"
        "=WINDOW_SCALE,flags_reply=WINDOW_SCALE)")
OTHER_ZONE = TIME_WAIT.replace("zone=5173", "zone=4243")
ICMP = ("icmp,orig=(src=192.168.1.1,dst=203.0.113.1,id=7,type=8,code=0),reply=(src=203.0.11"
        "3.1,dst=192.168.1.1,id=7,type=0,code=0),zone=5173")
DNAT = TCP1.replace("reply=(src=203.0.113.1,", "reply=(src=10.0.0.9,")
MALFORMED = [
    "garbage",
    "tcp,orig=(src=192.168.1.1,dst=203.0.113.1,sport=40000,dport=8000),zone=5173",
    TCP1.replace("sport=40000", "sport=70000"),
    TCP1.replace("src=192.168.1.1", "src=192.168.1"),
    TCP1.replace("dport=2037", ""),
    TCP1.replace("timeout=86395", "timeout=soon"),
    TCP1.replace("zone=5173", "zone=x"),
    TCP1[:-1],
    TCP1 + ",zone=5173",
    "tcp," + "x" * 5000,
    "udp,orig=(src=1.2.3.4,dst=5.6.7.8,sport=1,dport=2),reply=(src=5.6.7.8,dst=9.9.9.9,spo",
]


def test_a_line_is_one_connection_inside_public_remote_and_state() -> None:
    assert parse_line(TCP1, ZONE) == Connection(
        "tcp", IPv4Address("192.168.1.1"), 40000, IPv4Address("203.0.113.2"), 2037,
        IPv4Address("203.0.113.1"), 8000, "ESTABLISHED", 86395)
    udp = parse_line(UDP1, ZONE)
    assert udp is not None and (udp.proto, udp.public_port, udp.state, udp.left_seconds) == (
        "udp", 1693, None, 25)
    plain = parse_line(PLAIN, ZONE)
    assert plain is not None and plain.left_seconds is None
    more = parse_line(MORE, ZONE)
    assert more is not None and (more.public_port, more.state) == (2914, None)
    time_wait = parse_line(TIME_WAIT, ZONE)
    assert time_wait is not None and time_wait.state == "TIME_WAIT"


def test_other_protocols_zones_and_untranslated_replies_are_ignored() -> None:
    for line in (OTHER_ZONE, ICMP, DNAT, TCP1.replace("tcp,", "tcp6,", 1)):
        assert parse_line(line, ZONE) is None, line


@pytest.mark.parametrize("line", MALFORMED)
def test_a_malformed_line_raises_for_parse_line(line: str) -> None:
    with pytest.raises(conntrack_view.MalformedLineError):
        parse_line(line, ZONE)


def test_the_table_counts_malformed_and_ignored_lines_and_never_raises() -> None:
    lines = [TCP2, "", MALFORMED[0], UDP1, ICMP, *MALFORMED[1:], TCP1, OTHER_ZONE, "\n"]
    table = parse(lines, ZONE)
    assert [(str(c.inside_ip), c.inside_port, c.proto) for c in table.connections] == [
        ("192.168.1.1", 40000, "tcp"), ("192.168.1.1", 40000, "udp"),
        ("192.168.1.2", 40001, "tcp")]
    assert (table.malformed, table.ignored, table.truncated) == (len(MALFORMED), 2, False)
    assert table.available and table.notice == (
        f"{len(MALFORMED)} line(s) of the datapath's connection table could not be read")
    assert parse([TCP1], ZONE).notice is None
    assert parse([chr(0xFFFD) * 3, "\x00,orig=()"], ZONE).malformed == 2


def test_a_table_that_cannot_be_read_says_so_in_words() -> None:
    table = Table(ZONE, reason="ovs-appctl is not installed")
    assert not table.available
    assert table.notice == ("the datapath's connection table cannot be read here: "
                            "ovs-appctl is not installed")
    assert table.as_dict() == {
        "zone": ZONE, "available": False, "reason": "ovs-appctl is not installed",
        "connections": 0, "malformed": 0, "ignored": 0, "truncated": False,
        "notice": table.notice}
    assert "more entries than were read; 1 shown" in str(
        parse([TCP1], ZONE, truncated=True).notice)


def test_the_command_names_the_userspace_datapath_and_the_zone() -> None:
    assert conntrack_view.command(ZONE, 2.0) == [
        "ovs-appctl", "--timeout=2", "dpctl/dump-conntrack", "-s", "netdev@ovs-netdev",
        "zone=5173"]
    assert conntrack_view.command(1, 0.2)[1] == "--timeout=1"
    for zone in (-1, 65536):
        with pytest.raises(ValueError):
            conntrack_view.command(zone)


# ------------------------------------------------------------- the reader, real processes

def appctl(tmp_path: Path, body: str) -> str:
    """A stand-in ``ovs-appctl``: a shell script that records its arguments, then runs
    ``body`` (which ``exec``s anything long-lived, so that killing it kills all)."""
    path = tmp_path / "ovs-appctl"
    path.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\n{body}\n')
    path.chmod(0o755)
    return str(path)


def test_the_reader_runs_the_command_and_parses_its_lines(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("\n".join([TCP1, UDP1, MALFORMED[0], TCP2]) + "\n")
    table = conntrack_view.read(ZONE, appctl=appctl(tmp_path, f"cat {tmp_path}/out"))
    assert table.available and len(table.connections) == 3 and table.malformed == 1
    assert (tmp_path / "argv").read_text().split() == [
        "--timeout=2", "dpctl/dump-conntrack", "-s", "netdev@ovs-netdev", "zone=5173"]


def test_a_missing_or_failing_command_is_a_reason(tmp_path: Path) -> None:
    missing = conntrack_view.read(ZONE, appctl=str(tmp_path / "nowhere"))
    assert missing.reason == f"{tmp_path / 'nowhere'} is not installed"
    assert conntrack_view.read(ZONE, appctl=str(tmp_path)).reason is not None  # a folder
    failing = appctl(tmp_path, "echo 'ovs-vswitchd: datapath not found (Invalid argument)' >&2"
                               "\necho 'ovs-appctl: ovs-vswitchd: server returned an error' >&2"
                               "\nexit 2")
    table = conntrack_view.read(ZONE, appctl=failing)
    assert table.reason == (
        f"{failing} failed (exit status 2): ovs-vswitchd: datapath not found (Invalid "
        "argument); ovs-appctl: ovs-vswitchd: server returned an error")
    assert table.notice is not None and table.notice.startswith(conntrack_view.UNREADABLE)


def test_a_silent_command_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    start = time.monotonic()
    table = conntrack_view.read(ZONE, timeout=0.3, appctl=appctl(tmp_path, "exec sleep 30"))
    assert time.monotonic() - start < 2
    assert table.reason == f"{tmp_path / 'ovs-appctl'} gave no answer in 0.3 s"
    late = appctl(tmp_path, f"echo '{TCP1}'\nexec sleep 30")
    assert conntrack_view.read(ZONE, timeout=0.3, appctl=late).reason is not None


def test_an_endless_table_is_read_up_to_the_limit(tmp_path: Path) -> None:
    table = conntrack_view.read(ZONE, limit=500, appctl=appctl(tmp_path, f"exec yes '{TCP1}'"))
    assert table.available and table.truncated and len(table.connections) == 500
    exact = tmp_path / "exact"
    exact.write_text("\n".join([TCP1] * 5))
    table = conntrack_view.read(ZONE, limit=5, appctl=appctl(tmp_path, f"cat {exact}"))
    assert len(table.connections) == 5 and not table.truncated


def test_an_overlong_line_is_malformed_and_the_rest_is_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text(f"{TCP1}\n{'x' * 70000}\n{UDP1}")
    table = conntrack_view.read(ZONE, appctl=appctl(tmp_path, f"cat {out}"))
    assert (len(table.connections), table.malformed) == (2, 1)


def test_the_green_reader_leaves_the_other_green_threads_running(tmp_path: Path) -> None:
    """What the app does (``rest.datapath_reader``): eventlet's Popen and select, so a
    slow ``ovs-appctl`` does not hold the controller's one thread."""
    slow = appctl(tmp_path, f"sleep 0.5\necho '{TCP1}'")
    ticks = []

    def tick() -> None:
        for _ in range(100):
            ticks.append(time.monotonic())
            eventlet.sleep(0.02)

    ticker = eventlet.spawn(tick)
    reading = eventlet.spawn(conntrack_view.read, ZONE, appctl=slow,
                             popen=green_subprocess.Popen, wait=rest._green_wait)
    table = reading.wait()
    during = len(ticks)
    ticker.kill()
    assert table.available and len(table.connections) == 1
    assert during >= 10, during


def test_a_reading_serves_until_it_is_stale() -> None:
    now = [0.0]
    readings = []

    def reader() -> Table:
        readings.append(now[0])
        return Table(ZONE)

    cached = conntrack_view.Cached(reader, fresh=2.0, clock=lambda: now[0])
    cached()
    now[0] = 1.9
    cached()
    now[0] = 2.0
    cached()
    assert readings == [0.0, 2.0]

