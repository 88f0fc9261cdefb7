"""The main job: the PPTP ALG at work on the lab, in under two minutes.

Three clients call one real pptpd through one public address (203.0.113.2): ``c1`` runs
real pptp-linux; ``c2`` and ``c3`` run the project's own PNS driver, both with the
**same** Call ID, so the translation is visible. Data passes both ways; then the demo
prints the firewall's display commands, tshark's decode of what the server saw, the
frames each client exchanged and the counters, tears the lab down and prints a verdict.

The demo runs on the default lab (``--name`` picks another) and replaces a lab of that
name that is up, so a demo stopped half-way can simply be run again::

    .venv/bin/python -m topo.demo [--name NAME]      # what `make demo [LAB=NAME]` runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from topo import display, lab, peers, process
from topo.netns import ns_argv
from topo.pns_driver import parse_events

SERVER = lab.SERVER_IP
PUBLIC = lab.public_addresses(1)[0]
SHARED_CALL_ID = 4242
REPO = Path(__file__).resolve().parent.parent


def step(text: str) -> None:
    """One line of progress."""
    print(f"==> {text}", flush=True)


def heading(text: str) -> None:
    """A heading above a block of output."""
    print(f"\n--- {text} " + "-" * max(0, 72 - len(text)), flush=True)


def rest_json(rest: str, path: str) -> Any:
    """GET a JSON document from the lab controller's REST API at ``rest``."""
    with urllib.request.urlopen(rest + path, timeout=5) as response:
        return json.loads(response.read())


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; raise naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.3)


def established_calls(rest: str) -> list[dict[str, Any]]:
    """The calls whose data channel is open, from the REST API at ``rest``."""
    return [c for c in rest_json(rest, "/pptp-alg/calls") if c["state"] == "established"]


def start_driver(namespace: str, tag: str) -> subprocess.Popen[str]:
    """The project's PNS driver in ``namespace``, with the shared Call ID."""
    argv = ns_argv(namespace, [
        sys.executable, "-m", "topo.pns_driver", SERVER, "--call-id", str(SHARED_CALL_ID),
        "--frames", "40", "--interval", "0.15", "--wait-gre", "1", "--hold", "1",
        "--tag", tag,
    ])
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def capture(server_ns: str, run_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """tcpdump on the server's side of the wire (in ``server_ns``): control and GRE."""
    pcap = run_dir / "server-side.pcap"
    argv = ns_argv(server_ns, ["tcpdump", "-i", "eth0", "-U", "-w", str(pcap),
                           "tcp port 1723 or ip proto 47"])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, pcap


def server_view(pcap: Path) -> tuple[str, set[int]]:
    """tshark's decode of the Outgoing-Call-Requests the server received, and their IDs."""
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y",
         "pptp.control_message_type == 7 && !tcp.analysis.retransmission",
         "-T", "fields", "-e", "ip.src", "-e", "tcp.srcport", "-e", "pptp.call_id"],
        capture_output=True, text=True, check=False,
    ).stdout
    lines, ids = [], set()
    for row in out.splitlines():
        src, port, call_id = [*row.split("\t"), "", "", ""][:3]
        if call_id:
            ids.add(int(call_id))
            lines.append(f"   Outgoing-Call-Request from {src}:{port}  Call ID {call_id}")
    keys = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", f"gre && ip.dst == {SERVER}", "-T", "fields",
         "-e", "gre.key.call_id"], capture_output=True, text=True, check=False,
    ).stdout.split()
    lines.append(f"   GRE to the server used Call IDs (the server's): {sorted(set(keys))}")
    return "\n".join(lines), ids


def run_demo(run_dir: Path, name: str = lab.DEFAULT_NAME) -> bool:
    """The demo itself, on lab ``name`` (replaced if up); True when every check held."""
    ok = True
    planned = lab.plan(3, name=name)
    step(f"bringing up the lab {name}: 3 clients, bridge {planned.bridge}, the Ryu app")
    state = lab.up(3, name=name, replace=True)
    rest = state.rest_url
    step(f"the app listens on {state.controller} and serves REST on {rest}")
    c1, c2, c3 = (state.client(i) for i in (1, 2, 3))
    server = client = None
    drivers: list[subprocess.Popen[str]] = []
    tcpdump = None
    try:
        step(f"starting real pptpd in {state.server_namespace} ({SERVER}) and a capture on "
             f"its wire")
        server = peers.start_pptpd(state.server_namespace, SERVER, run_dir / "srv")
        tcpdump, pcap = capture(state.server_namespace, run_dir)
        step(f"{c1}: real pptp-linux calls the server")
        client = peers.start_pptp_client(c1, SERVER, run_dir / "c1", tag="c1")
        wait(lambda: len(established_calls(rest)) >= 1, 20, "the pptp-linux call")
        step(f"{c2}, {c3}: the project's PNS driver, both with Call ID {SHARED_CALL_ID}")
        drivers = [start_driver(c2, "c2"), start_driver(c3, "c3")]
        wait(lambda: len(established_calls(rest)) >= 3, 20, "three established calls")
        step("three calls up; passing data both ways (the switch's flow statistics are "
             "polled every 5 s)")
        time.sleep(6)
        heading("display firewall session-table")
        print(display.show(rest, "session-table"))
        heading("display firewall server-map")
        print(display.show(rest, "server-map"))
        calls = established_calls(rest)
        step("waiting for the drivers to finish their calls")
        results = []
        for proc in drivers:
            out, _ = proc.communicate(timeout=40)
            results.append(parse_events(out))
        time.sleep(1)
        heading("per-client frames (PPP frames each client sent and got back)")
        status = client.status() or {}
        c1_tags = status.get("received_tags", {})
        print(f"   c1 pptp-linux     sent {status.get('sent', 0):3d}  "
              f"received {status.get('received', 0):3d}  from {sorted(c1_tags)}")
        ok &= status.get("received", 0) > 0
        for tag, events in zip(("c2", "c3"), results, strict=True):
            summary = next((e for e in events if e.get("event") == "summary"), {})
            keys = summary.get("gre_received_by_key", {})
            print(f"   {tag} PNS driver    sent {summary.get('gre_sent', 0):3d}  "
                  f"received {summary.get('gre_received', 0):3d}  "
                  f"GRE keys received {sorted(int(k) for k in keys)}")
            ok &= summary.get("gre_received", 0) > 0 and set(keys) == {str(SHARED_CALL_ID)}
        heading("counters")
        print(display.show(rest, "counters"))
        process.terminate(tcpdump.pid, 10.0, popen=tcpdump)
        tcpdump = None
        heading("what the server saw (tshark, independent of the project's decoder)")
        text, ids = server_view(pcap)
        print(text)
        ok &= len(ids) == 3 and len(calls) >= 3
        ok &= all(c["public"] == PUBLIC for c in calls)
        publics = sorted(c["public_call_id"] for c in calls if c["client"] != lab.client_address(1))
        print(f"\n   c2 and c3 both sent Call ID {SHARED_CALL_ID}; on the public side they "
              f"became {publics}")
    finally:
        step("tearing down")
        if tcpdump is not None:
            process.terminate(tcpdump.pid, 10.0, popen=tcpdump)
        for proc in drivers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        peers.stop_all([client, server])
        lab.down(name=name)
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit 0 when the ALG did its job."""
    parser = argparse.ArgumentParser(prog="python -m topo.demo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--name", default=lab.DEFAULT_NAME,
                        help=f"the lab to run on (default {lab.DEFAULT_NAME}); it is replaced")
    args = parser.parse_args(argv)
    try:
        lab.check_name(args.name)
    except ValueError as exc:
        print(f"topo.demo: {exc}", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("the demo needs root (namespaces and OVS)", file=sys.stderr)
        return 1
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pptp-alg-demo-") as tmp:
        try:
            ok = run_demo(Path(tmp), args.name)
        except Exception as exc:
            print(f"\nverdict: FAILED ({type(exc).__name__}: {exc})")
            return 1
    took = time.monotonic() - started
    if ok:
        print(f"\nverdict: OK: three clients, one public address, Call IDs translated, "
              f"data both ways ({took:.0f} s)")
        return 0
    print(f"\nverdict: FAILED: see the output above ({took:.0f} s)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
