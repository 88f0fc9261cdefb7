"""Helpers for the gateway's end-to-end tests: one lab, its peers, captures and REST.

A :class:`GatewayLab` wraps a lab that ``topo.lab.up`` built and everything a test starts
in it (real PPTP peers, the PNS driver, the tools of ``tests.e2e.gw_tools``, packet
captures). ``cleanup`` stops all of it, each process by its own PID; the ``gateway``
fixture in ``conftest.py`` calls it and then ``topo.lab.down``, whatever happens.

Every test's lab has a name of its own (``lab_name``), never the default one, so tests
leave a lab that someone works in alone and can run side by side. The namespaces, the
bridge and the controller's ports come from the lab's state (``gw.client(i)``,
``gw.server``, ``gw.state``); the addresses are the same in every lab.

A lab of several bridges has a handle per gateway (``gw.gateway("g2")``, ``gw.gateways``),
each a :class:`GatewayLab` of that gateway's namespaces, bridge and REST paths
(``/pptp-alg/gateways/g2/...``); the lab's handle is gateway 1's. What a test starts
through any of them is stopped by the lab's ``cleanup``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import select
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from scapy.layers.pptp import PPTP

from alg.events import EntryKind
from ryu_apps import switch
from topo import lab
from topo.netns import ns_argv
from topo.peers import (
    PeerProcess,
    PptpClient,
    PptpServer,
    start_pptp_client,
    start_pptpd,
    stop_all,
)
from topo.peers import wait_for as _wait_for

REPO = Path(__file__).resolve().parents[2]
SERVER_IP = lab.SERVER_IP
PUBLIC_IP = lab.public_addresses(1)[0]

OCRQ, OCRP, CCRQ, CDN = 7, 8, 12, 13
#: A capture filter for PPTP: the control connections and GRE.
PPTP_BPF = ["tcp", "port", "1723", "or", "ip", "proto", "47"]
#: Control message types with a Call ID field, and with a Peer's Call ID field.
_HAS_CALL_ID = (7, 8, 9, 10, 12, 13)
_HAS_PEER_CALL_ID = (8, 10, 11, 14, 15)

T = TypeVar("T")


def lab_name() -> str:
    """A lab name for one test: ``t`` and 7 random hex digits, never the default name."""
    return f"t{uuid.uuid4().hex[:7]}"


def client_ip(index: int) -> str:
    """The address of client ``index`` (``c<index>``)."""
    return lab.client_address(index)


def log_records(gw: GatewayLab) -> list[dict[str, Any]]:
    """The lines of ``serve.log`` in the test's folder (``gw_tools serve --log``), decoded;
    none before the listener wrote one."""
    path = gw.run_dir / "serve.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Callable[[], T], timeout: float, what: str = "condition",
             interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something true (see ``topo.peers.wait_for``)."""
    return _wait_for(predicate, timeout, interval=interval, what=what)


def kill(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 3.0) -> None:
    """Stop one process we started, by its PID: ``sig``, then SIGKILL after ``grace``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Capture:
    """``tcpdump`` on a namespace's ``eth0`` into a pcap file, decoded later by tshark.

    Args:
        netns: The namespace.
        path: The pcap file.
        bpf: The capture filter (words of a tcpdump expression).
    """

    def __init__(self, netns: str, path: Path, bpf: Sequence[str] = ()):
        self.netns = netns
        self.path = path
        argv = ["tcpdump", "-i", "eth0", "-n", "-U", "--immediate-mode", "-Z", "root",
                "-w", str(path), *bpf]
        self.proc = subprocess.Popen(ns_argv(netns, argv), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], 10)
        line = self.proc.stderr.readline().decode(errors="replace") if ready else ""
        if "listening on" not in line:
            kill(self.proc)
            raise RuntimeError(f"tcpdump in {netns} did not start: {line!r}")

    def stop(self) -> None:
        """Stop tcpdump (SIGINT flushes the file); safe to call twice."""
        kill(self.proc, signal.SIGINT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def fields(self, display_filter: str, *names: str) -> list[list[str]]:
        """Decode the pcap with tshark: one list of field values per matching packet.

        Multiple occurrences of a field in one packet (e.g. two PPTP messages in one
        segment) come out as ``a,b``.
        """
        argv = ["tshark", "-n", "-r", str(self.path), "-Y", display_filter, "-T", "fields",
                "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
        for name in names:
            argv += ["-e", name]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"tshark failed: {proc.stderr}")
        return [line.split("\t") for line in proc.stdout.splitlines() if line.strip()]

    def pptp_messages(self) -> list[dict[str, Any]]:
        """Every PPTP control message in the capture, decoded independently of ``alg``.

        tshark decodes TCP: each connection's payload is put together by sequence number
        (a retransmission repeats bytes already placed), since the gateway may forward a
        message in several segments and tshark's PPTP dissector does not reassemble.
        Scapy's PPTP layer then cuts the stream by Length and decodes each message. A
        message's ``frame`` is the frame that carried its first byte.
        """
        streams: dict[str, dict[str, Any]] = {}
        for row in self.fields("tcp.port == 1723 && tcp.len > 0", "frame.number", "ip.src",
                               "ip.dst", "tcp.srcport", "tcp.dstport", "tcp.stream",
                               "tcp.seq_raw", "tcp.payload"):
            frame, src, dst, sport, dport, stream, seq, payload = row[:8]
            key = f"{stream}:{src}:{sport}"
            entry = streams.setdefault(key, {
                "src": src, "dst": dst, "sport": int(sport), "dport": int(dport),
                "base": int(seq), "bytes": {}, "frames": {},
            })
            offset = (int(seq) - entry["base"]) % (1 << 32)
            for i, byte in enumerate(bytes.fromhex(payload.replace(":", ""))):
                entry["bytes"].setdefault(offset + i, byte)
                entry["frames"].setdefault(offset + i, int(frame))
        out = []
        for entry in streams.values():
            data = bytearray()
            while len(data) in entry["bytes"]:
                data.append(entry["bytes"][len(data)])
            pos = 0
            while pos + 12 <= len(data):
                length = int.from_bytes(data[pos : pos + 2], "big")
                if length < 12 or pos + length > len(data):
                    break
                decoded = PPTP(bytes(data[pos : pos + length]))
                message: dict[str, Any] = {
                    "frame": entry["frames"][pos], "src": entry["src"], "dst": entry["dst"],
                    "sport": entry["sport"], "dport": entry["dport"],
                    "type": int(decoded.ctrl_msg_type),
                }
                for name in ("call_id", "peer_call_id"):
                    if name in decoded.fields:
                        message[name] = int(decoded.getfieldval(name))
                if message["type"] == OCRP:
                    message["result"] = int(decoded.result_code)
                out.append(message)
                pos += length
        return sorted(out, key=lambda m: int(m["frame"]))

    def gre_keys(self) -> list[tuple[str, str, int]]:
        """(source, destination, Call ID of the GRE key) of every GRE data/ack packet."""
        return [(r[0], r[1], int(r[2])) for r in
                self.fields("gre && gre.key.call_id", "ip.src", "ip.dst", "gre.key.call_id")]


class Repl:
    """The step-by-step PPTP client of ``gw_tools repl``, running in a client namespace."""

    def __init__(self, proc: subprocess.Popen[bytes]):
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.transcript: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace"))

    def __call__(self, op: str, timeout: float = 15.0, ok: bool = True,
                 **args: Any) -> dict[str, Any]:
        """Run one command; return its reply (``ok`` true), or fail the test; with
        ``ok`` False, return the reply whatever it is."""
        assert self.proc.stdin is not None
        line = json.dumps({"op": op, **args})
        self.transcript.append("> " + line)
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        try:
            reply_text = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"repl: no reply to {line} within {timeout} s") from None
        self.transcript.append("< " + reply_text.strip())
        reply: dict[str, Any] = json.loads(reply_text)
        if ok and not reply.get("ok"):
            raise AssertionError(f"repl: {line} failed: {reply}")
        return reply


class GatewayLab:
    """A running lab and what the test started in it, seen from one of its gateways.

    Args:
        state: The lab.
        run_dir: Where the test's files go.
        gateway: The gateway (``g<j>``) this handle is of; gateway 1 by default.
        parent: The lab's handle, whose lists of what was started this one shares.
    """

    def __init__(self, state: lab.LabState, run_dir: Path, gateway: str | None = None,
                 parent: GatewayLab | None = None):
        self.state = state
        self.run_dir = run_dir
        self.unit = state.gateway(gateway or 1)
        self.peers: list[PeerProcess] = parent.peers if parent is not None else []
        self.procs: list[subprocess.Popen[Any]] = parent.procs if parent is not None else []
        self.captures: list[Capture] = parent.captures if parent is not None else []
        self.repls: list[Repl] = parent.repls if parent is not None else []
        self._handles: dict[str, GatewayLab] = (
            parent._handles if parent is not None else {self.unit.name: self})

    @property
    def name(self) -> str:
        """The gateway's name (``g1`` .. ``g9``)."""
        return self.unit.name

    @property
    def bridge(self) -> str:
        """The gateway's bridge."""
        return self.unit.bridge

    def gateway(self, which: str | int) -> GatewayLab:
        """The handle of gateway ``which`` (``g<j>`` or its number) of the same lab.

        Its files go to ``run_dir/g<j>`` (gateway 1's to ``run_dir``).
        """
        unit = self.state.gateway(which)
        if unit.name not in self._handles:
            first = self._handles[self.state.gateway(1).name]
            folder = first.run_dir / unit.name
            folder.mkdir(parents=True, exist_ok=True)
            self._handles[unit.name] = GatewayLab(self.state, folder, unit.name, first)
        return self._handles[unit.name]

    @property
    def gateways(self) -> list[GatewayLab]:
        """The handles of every gateway of the lab, ``g1`` first."""
        return [self.gateway(unit.name) for unit in self.state.all_gateways]

    @property
    def server(self) -> str:
        """The server's namespace."""
        return self.unit.server_namespace

    def client(self, index: int) -> str:
        """The namespace of client ``index`` (1-based)."""
        return self.unit.client(index)

    # REST and the switch ------------------------------------------------------------

    def rest_url(self) -> str:
        """The base URL of the app's REST API: in a lab of several controllers on etcd,
        the one that is master of this gateway now.

        Raises:
            LookupError: no controller is master of it.
        """
        if not self.state.controllers:
            return self.state.rest_url
        index = lab.current_master(self.state, self.unit.name)
        if index is None:
            raise LookupError(f"no controller is master of {self.unit.name}")
        return self.state.controller_at(index).rest_url

    def rest(self, path: str, controller: int | None = None) -> Any:
        """GET a REST path of the app (``/pptp-alg/...``, the gateway's) and decode its
        JSON; ``controller``: that controller's (a lab on etcd), else the master's."""
        base = (self.state.controller_at(controller).rest_url if controller is not None
                else self.rest_url())
        with urllib.request.urlopen(base + self.unit.rest_path(path), timeout=5) as resp:
            return json.loads(resp.read())

    def counters(self) -> dict[str, int]:
        """The ALG's counters."""
        body: dict[str, dict[str, int]] = self.rest("/pptp-alg/counters")
        return body["alg"]

    def calls(self) -> list[dict[str, Any]]:
        """The live calls."""
        calls: list[dict[str, Any]] = self.rest("/pptp-alg/calls")
        return calls

    def established(self) -> list[dict[str, Any]]:
        """The live calls whose data channel is open."""
        return [c for c in self.calls() if c["state"] == "established"]

    def wait_established(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """Wait until exactly ``count`` calls are established; return them."""
        def ready() -> list[dict[str, Any]] | None:
            calls = self.established()
            return calls if len(calls) == count else None

        return wait_for(ready, timeout, f"{count} established call(s) in REST")

    def sessions(self) -> list[dict[str, Any]]:
        """The controller's NAT sessions (not the datapath's connections)."""
        sessions: list[dict[str, Any]] = self.rest("/pptp-alg/sessions")
        return [s for s in sessions if s["by"] == "controller"]

    def flows(self, kind: EntryKind | None = None) -> list[str]:
        """``ovs-ofctl dump-flows`` lines, only those of one kind of entry if given."""
        argv = ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", self.unit.bridge]
        if kind is not None:
            argv.append(switch.kind_filter(kind))
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
        return [line.strip() for line in out.stdout.splitlines() if "cookie=" in line]

    def gre_flows(self) -> list[str]:
        """The GRE server-map entries (both directions)."""
        return self.flows(EntryKind.GRE_OUTBOUND) + self.flows(EntryKind.GRE_INBOUND)

    @staticmethod
    def n_packets(lines: Sequence[str]) -> int:
        """Sum of ``n_packets`` over flow lines."""
        total = 0
        for line in lines:
            for part in line.replace(",", " ").split():
                if part.startswith("n_packets="):
                    total += int(part.split("=")[1])
        return total

    # Processes ----------------------------------------------------------------------

    def pptpd(self, **kwargs: Any) -> PptpServer:
        """Start pptpd in the server's namespace (with the stand-in as its pppd)."""
        server = start_pptpd(self.server, SERVER_IP, self.run_dir / "srv", **kwargs)
        self.peers.append(server)
        return server

    def pptp_client(self, netns: str, tag: str, **kwargs: Any) -> PptpClient:
        """Start pptp-linux (with its stand-in) in a client namespace."""
        client = start_pptp_client(netns, SERVER_IP, self.run_dir / tag, tag=tag, **kwargs)
        self.peers.append(client)
        return client

    def popen(self, netns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command in a namespace (from the repo root); it is stopped at cleanup."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(ns_argv(netns, argv), cwd=REPO, **kwargs)
        self.procs.append(proc)
        return proc

    def tool(self, netns: str, *args: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``python -m tests.e2e.gw_tools ARGS`` in a namespace."""
        return self.popen(netns, [sys.executable, "-m", "tests.e2e.gw_tools", *args], **kwargs)

    def run_tool(self, netns: str, *args: str, timeout: float = 20) -> list[dict[str, Any]]:
        """Run a ``gw_tools`` command to its end; return its JSON lines."""
        proc = self.tool(netns, *args, text=True)
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"gw_tools {args} in {netns}: {proc.returncode} {out} {err}"
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def driver(self, netns: str, *args: str) -> subprocess.Popen[str]:
        """Start the PNS driver (``python -m topo.pns_driver SERVER ARGS``) in a namespace."""
        return self.popen(netns, [sys.executable, "-m", "topo.pns_driver", SERVER_IP, *args],
                          text=True)

    def repl(self, netns: str, timeout: float | None = None) -> Repl:
        """Start the step-by-step PPTP client in a namespace; ``timeout``: seconds it
        waits for each reply (its own default without)."""
        more = () if timeout is None else ("--timeout", str(timeout))
        proc = self.tool(netns, "repl", SERVER_IP, *more, stdin=subprocess.PIPE)
        repl = Repl(proc)
        self.repls.append(repl)
        return repl

    def capture(self, netns: str, name: str, bpf: Sequence[str] = ()) -> Capture:
        """Start a packet capture on a namespace's ``eth0``."""
        cap = Capture(netns, self.run_dir / f"{name}.pcap", bpf)
        self.captures.append(cap)
        return cap

    def send_gre(self, netns: str, dst: str, keys: Sequence[int], count: int = 5,
                 src: str | None = None) -> int:
        """Send GRE data packets with the given keys from a raw socket; return how many."""
        args = ["gre-send", dst, "--count", str(count), "--interval", "0.02"]
        for key in keys:
            args += ["--key", str(key)]
        if src:
            args += ["--src", src]
        (summary,) = self.run_tool(netns, *args)
        sent: int = summary["sent"]
        return sent

    # Diagnostics and cleanup --------------------------------------------------------

    def diagnostics(self) -> str:
        """What to look at when a test fails (of every gateway of a lab of several)."""
        parts: list[str] = []
        for handle in self.gateways if self.state.gateways else [self]:
            where = f" of {handle.name}" if self.state.gateways else ""
            for what, fetch in (("counters", lambda h=handle: h.rest("/pptp-alg/counters")),
                                ("calls", handle.calls), ("sessions", handle.sessions)):
                try:
                    parts.append(f"--- {what}{where}\n{json.dumps(fetch(), indent=1)}")
                except Exception as exc:  # the controller may be gone
                    parts.append(f"--- {what}{where}: {exc}")
            with contextlib.suppress(Exception):
                parts.append(f"--- flows{where}\n" + "\n".join(handle.flows()))
        for peer in self.peers:
            parts += [f"--- {peer.name} output", peer.output()[-2000:],
                      f"--- {peer.name} syslog", peer.syslog()[-3000:]]
        for repl in self.repls:
            parts.append("--- repl\n" + "\n".join(repl.transcript[-40:]))
        logs = [(f"controller {c.index}", c.log_path) for c in self.state.controllers] or [
            ("ryu.log", self.state.log_path)]
        for what, path in logs:
            with contextlib.suppress(OSError):
                log = Path(path).read_text(errors="replace")
                parts.append(f"--- {what} (tail)\n" + "\n".join(log.splitlines()[-60:]))
        return "\n".join(parts)

    def cleanup(self) -> None:
        """Stop every process this lab's test started (each by its PID)."""
        for cap in self.captures:
            with contextlib.suppress(Exception):
                cap.stop()
        for repl in self.repls:
            with contextlib.suppress(Exception):
                if repl.proc.stdin is not None:
                    repl.proc.stdin.close()
        for proc in self.procs:
            with contextlib.suppress(Exception):
                kill(proc)
        stop_all(self.peers)
