"""Calls held open on a path, for the figures that need calls in place (3 and 5).

:func:`pac` runs the PAC emulator in the path's server namespace and collects the calls
it logs; :func:`hold` sets up calls from the client namespace and keeps them until its
block ends; :func:`add_sources` gives the client namespace more inside addresses.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.topologies import Path
from topo.netns import ns_argv, ns_run

INTERFACE = "eth0"


@dataclass
class Pac:
    """The running PAC emulator and the calls it has answered (with ``log``)."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def call_for(self, pac_call_id: int) -> dict[str, Any]:
        """The PAC's view of the call it numbered ``pac_call_id``: the PNS's address
        (``peer_ip``) and Call ID (``peer_call_id``) as they reached the server."""
        for call in reversed(self.calls):
            if call["call_id"] == pac_call_id:
                found: dict[str, Any] = call
                return found
        raise LookupError(f"the PAC answered no call {pac_call_id}")


@contextmanager
def pac(path: Path, log: bool = False) -> Iterator[Pac]:
    """The PAC emulator on ``path``'s server address, for the block."""
    proc = subprocess.Popen(
        ns_argv(path.server, [sys.executable, "-m", "bench.pptp_peers", "pac", path.server_ip,
                              *(["--log"] if log else [])]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    state = Pac()
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline():
            raise RuntimeError(f"the PAC did not start on {path.name}")
        stream = proc.stdout

        def collect() -> None:
            for line in stream:
                state.calls.append(json.loads(line))

        threading.Thread(target=collect, daemon=True).start()
        yield state
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def hold(path: Path, calls: int, sources: Sequence[str] = (), first_id: int = 1,
         timeout: float = 900) -> Iterator[dict[str, Any]]:
    """Set up ``calls`` calls from ``path``'s client (one control connection per source
    address), yield the PNS's report (``held``, ``latencies``, ``seconds``, ``failed``)
    while they stand; they are cleared when the block ends."""
    proc = subprocess.Popen(
        ns_argv(path.client, [sys.executable, "-m", "bench.pptp_peers", "pns", path.server_ip,
                              "--mode", "hold", "--calls", str(calls), "--sources",
                              ",".join(sources), "--first-id", str(first_id)]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        timer = threading.Timer(timeout, proc.kill)
        timer.daemon = True
        timer.start()
        line = proc.stdout.readline()
        timer.cancel()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"the PNS on {path.name} said nothing: {err[-2000:]}")
        report: dict[str, Any] = json.loads(line)
        yield report
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def primary_address(netns: str) -> ipaddress.IPv4Interface:
    """The namespace's first IPv4 address on its interface, with its prefix."""
    data = json.loads(ns_run(netns, "ip", "-j", "-4", "addr", "show", "dev", INTERFACE))
    info = data[0]["addr_info"][0]
    return ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")


def add_sources(netns: str, count: int, first_host: int = 100) -> list[str]:
    """Give the client namespace ``count`` more addresses in its subnet, from host
    number ``first_host`` on; their list."""
    network = primary_address(netns).network
    added = []
    for n in range(first_host, first_host + count):
        ip = str(network.network_address + n)
        ns_run(netns, "ip", "addr", "replace", f"{ip}/{network.prefixlen}", "dev", INTERFACE)
        added.append(ip)
    return added
