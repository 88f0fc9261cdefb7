"""A stand-in for pppd: async-HDLC PPP frames over stdin/stdout, counted and logged.

These machines have no kernel PPP, so the real peers (pptpd on the server, pptp-linux on
the client) get this program in place of pppd. It speaks async HDLC (RFC 1662) on its
stdin/stdout, which is the call's pty (pptpd) or a socat channel to ``pptp
--nolaunchpppd`` (client):

- it sends ``count`` frames, one every ``interval`` seconds, each a PPP frame of
  ``protocol`` (default 0x0021, IP) whose payload is the text ``TAG:N`` (``N`` counts
  from 1). It speaks first: pptpd forwards GRE to its pppd only after that pppd wrote
  something.
- it decodes the peer's frames (checking the FCS), counts them per tag (the text before
  the first ``:``), and, with ``echo``, answers each tagged frame with ``TAG:echo:PAYLOAD``.
- it keeps a JSON status file up to date (atomically replaced): frames sent and received,
  the tags received, bad FCS, its argv (pptpd passes the tty, speed and ``ipparam``).

It runs until its input ends, a signal (TERM, HUP, INT) arrives, or ``exit_after``
seconds have passed. pptpd starts it with fixed arguments, so every setting can also come
from a JSON config file (``--config`` or the environment variable ``STANDIN_CONFIG``);
command-line values override the file. With ``status_dir`` each process writes
``standin-<pid>.json`` there, which suits pptpd, where one stand-in runs per call.

Run it as ``python -m topo.standin_ppp`` or as a file path; it uses the standard library
only, so the file works on its own (see ``topo.peer_files.write_standin_wrapper``).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import struct
import sys
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAG = 0x7E
ESCAPE = 0x7D
ESCAPE_XOR = 0x20
PPP_ADDRESS_CONTROL = b"\xff\x03"
PPP_IP = 0x0021
FCS_INIT = 0xFFFF
FCS_GOOD = 0xF0B8
CONFIG_ENV = "STANDIN_CONFIG"
MAX_KEPT_PAYLOADS = 20


def _fcs_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ 0x8408 if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_FCS_TABLE = _fcs_table()


def fcs16(data: bytes, fcs: int = FCS_INIT) -> int:
    """Run the PPP FCS-16 (RFC 1662, polynomial x^16 + x^12 + x^5 + 1) over ``data``.

    Args:
        data: The bytes to add.
        fcs: The running value; start with ``FCS_INIT``.

    Returns:
        The updated running value (not complemented). Over a frame followed by its own
        FCS it is ``FCS_GOOD`` when the frame is intact.
    """
    for byte in data:
        fcs = (fcs >> 8) ^ _FCS_TABLE[(fcs ^ byte) & 0xFF]
    return fcs


def hdlc_escape(data: bytes) -> bytes:
    """Escape 0x7E, 0x7D and every byte below 0x20 (the default ACCM) as 0x7D, byte ^ 0x20.

    Args:
        data: The unescaped frame contents.

    Returns:
        The escaped bytes, without flags.
    """
    out = bytearray()
    for byte in data:
        if byte in (FLAG, ESCAPE) or byte < 0x20:
            out += bytes((ESCAPE, byte ^ ESCAPE_XOR))
        else:
            out.append(byte)
    return bytes(out)


def ppp_frame(protocol: int, payload: bytes) -> bytes:
    """Build a raw PPP frame ``FF 03 PROTOCOL PAYLOAD`` (what GRE carries).

    Args:
        protocol: The 16-bit PPP protocol number.
        payload: The information field.

    Returns:
        The frame without HDLC framing or FCS.
    """
    return PPP_ADDRESS_CONTROL + struct.pack("!H", protocol) + payload


def hdlc_encode(protocol: int, payload: bytes) -> bytes:
    """Encode one PPP frame in async HDLC: flag, escaped(FF 03 proto data FCS), flag.

    Args:
        protocol: The 16-bit PPP protocol number.
        payload: The information field.

    Returns:
        The bytes to write on the serial line (pty), both flags included.
    """
    frame = ppp_frame(protocol, payload)
    fcs = fcs16(frame) ^ 0xFFFF
    frame += struct.pack("<H", fcs)
    return bytes((FLAG,)) + hdlc_escape(frame) + bytes((FLAG,))


@dataclass(frozen=True)
class PppFrame:
    """One decoded PPP frame.

    Attributes:
        protocol: The PPP protocol number.
        payload: The information field.
    """

    protocol: int
    payload: bytes


def parse_ppp(frame: bytes) -> PppFrame | None:
    """Split a raw PPP frame (no FCS) into protocol and payload.

    Accepts an absent address/control field (ACFC) and a one-byte protocol (PFC).

    Args:
        frame: The frame, starting with ``FF 03`` or the protocol.

    Returns:
        The frame, or None when it is too short to hold a protocol.
    """
    if frame.startswith(PPP_ADDRESS_CONTROL):
        frame = frame[2:]
    if not frame:
        return None
    if frame[0] & 1:
        return PppFrame(frame[0], frame[1:])
    if len(frame) < 2:
        return None
    return PppFrame(struct.unpack("!H", frame[:2])[0], frame[2:])


@dataclass
class HdlcDecoder:
    """Streaming async-HDLC decoder: feed it bytes, get back the complete good frames.

    Attributes:
        frames: Good frames decoded so far.
        bad_fcs: Frames dropped for a bad FCS.
        runts: Frames dropped for being too short (fewer than 4 bytes with the FCS).
    """

    frames: int = 0
    bad_fcs: int = 0
    runts: int = 0
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    _escaped: bool = field(default=False, repr=False)

    def feed(self, data: bytes) -> list[PppFrame]:
        """Decode more of the stream.

        Args:
            data: The next bytes read from the line, cut anywhere.

        Returns:
            The frames completed by these bytes, in order.
        """
        out: list[PppFrame] = []
        for byte in data:
            if byte == FLAG:
                frame = self._finish()
                if frame is not None:
                    out.append(frame)
            elif byte == ESCAPE:
                self._escaped = True
            elif self._escaped:
                self._buffer.append(byte ^ ESCAPE_XOR)
                self._escaped = False
            else:
                self._buffer.append(byte)
        return out

    def _finish(self) -> PppFrame | None:
        raw = bytes(self._buffer)
        self._buffer.clear()
        aborted = self._escaped
        self._escaped = False
        if not raw:
            return None
        if aborted or len(raw) < 4:
            self.runts += 1
            return None
        if fcs16(raw) != FCS_GOOD:
            self.bad_fcs += 1
            return None
        frame = parse_ppp(raw[:-2])
        if frame is None:
            self.runts += 1
            return None
        self.frames += 1
        return frame


def make_payload(tag: str, counter: int) -> bytes:
    """Build the identifiable payload ``TAG:N``.

    Args:
        tag: The sender's tag (should not contain ``:``).
        counter: The frame number.

    Returns:
        The payload bytes.
    """
    return f"{tag}:{counter}".encode()


def payload_tag(payload: bytes) -> str | None:
    """Return the tag of a payload built by ``make_payload`` (or an echo of one).

    Args:
        payload: A frame's information field.

    Returns:
        The text before the first ``:``, or None when the payload is not such text.
    """
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        return None
    tag, sep, _ = text.partition(":")
    return tag if sep and tag.isprintable() else None


@dataclass
class StandinConfig:
    """Settings of one stand-in run.

    Attributes:
        tag: The tag put in every frame; ``{pid}`` is replaced by the process ID.
        count: Frames to send (0: none).
        interval: Seconds between two frames.
        delay: Seconds before the first frame.
        protocol: PPP protocol number of the frames.
        echo: Answer each tagged frame from the peer with ``TAG:echo:PAYLOAD``.
        status: Path of the JSON status file.
        status_dir: Directory for ``standin-<pid>.json`` (used when ``status`` is empty).
        exit_after: Stop after this many seconds (0: run until input ends or a signal).
    """

    tag: str = "standin-{pid}"
    count: int = 20
    interval: float = 0.25
    delay: float = 0.0
    protocol: int = PPP_IP
    echo: bool = False
    status: str = ""
    status_dir: str = ""
    exit_after: float = 0.0


class _StopSignalError(Exception):
    """Raised by the signal handler to leave the main loop."""


class Standin:
    """The running stand-in: sends, receives, and keeps the status file.

    Args:
        config: The settings.
        argv: The command line, recorded in the status.
        rfd: File descriptor to read the peer's HDLC from.
        wfd: File descriptor to write HDLC frames to.
    """

    def __init__(self, config: StandinConfig, argv: list[str], rfd: int = 0, wfd: int = 1):
        self.config = config
        self.pid = os.getpid()
        self.tag = config.tag.replace("{pid}", str(self.pid))
        self.rfd, self.wfd = rfd, wfd
        self.decoder = HdlcDecoder()
        self.status_path = self._status_path()
        self.stop_reason = ""
        self.state: dict[str, Any] = {
            "pid": self.pid,
            "tag": self.tag,
            "argv": argv,
            "tty": _ttyname(rfd),
            "state": "running",
            "sent": 0,
            "echoed": 0,
            "received": 0,
            "received_tags": {},
            "received_protocols": {},
            "last_payloads": [],
            "bad_fcs": 0,
            "runts": 0,
            "write_errors": 0,
            "started": time.time(),
            "first_rx": None,
            "updated": time.time(),
        }

    def _status_path(self) -> Path | None:
        if self.config.status:
            return Path(self.config.status)
        if self.config.status_dir:
            return Path(self.config.status_dir) / f"standin-{self.pid}.json"
        return None

    def write_status(self) -> None:
        """Replace the status file atomically with the current state."""
        if self.status_path is None:
            return
        self.state["updated"] = time.time()
        self.state["bad_fcs"] = self.decoder.bad_fcs
        self.state["runts"] = self.decoder.runts
        tmp = self.status_path.with_name(f".{self.status_path.name}.{self.pid}.tmp")
        tmp.write_text(json.dumps(self.state, sort_keys=True))
        os.replace(tmp, self.status_path)

    def _write(self, data: bytes) -> bool:
        try:
            while data:
                written = os.write(self.wfd, data)
                data = data[written:]
        except OSError:
            self.state["write_errors"] += 1
            return False
        return True

    def _send(self, payload: bytes) -> bool:
        return self._write(hdlc_encode(self.config.protocol, payload))

    def _received(self, frames: list[PppFrame]) -> None:
        for frame in frames:
            self.state["received"] += 1
            if self.state["first_rx"] is None:
                self.state["first_rx"] = time.time()
            protocols = self.state["received_protocols"]
            key = f"0x{frame.protocol:04x}"
            protocols[key] = protocols.get(key, 0) + 1
            kept = self.state["last_payloads"]
            kept.append(frame.payload.decode("ascii", "replace"))
            del kept[:-MAX_KEPT_PAYLOADS]
            tag = payload_tag(frame.payload)
            if tag is None:
                continue
            tags = self.state["received_tags"]
            tags[tag] = tags.get(tag, 0) + 1
            if (
                self.config.echo
                and tag != self.tag
                and b":echo:" not in frame.payload
                and self._send(f"{self.tag}:echo:".encode() + frame.payload)
            ):
                self.state["echoed"] += 1

    def stop(self, reason: str) -> None:
        """Ask the main loop to end.

        Args:
            reason: Recorded as the final state.
        """
        self.stop_reason = reason

    def on_signal(self, signum: int, _frame: object) -> None:
        """Signal handler: end the main loop at once (the status is still written)."""
        if self.stop_reason:
            return
        self.stop(signal.Signals(signum).name)
        raise _StopSignalError

    def run(self) -> int:
        """Send, receive and keep the status until the end; return the exit status."""
        cfg = self.config
        start = time.monotonic()
        next_send = start + cfg.delay
        deadline = start + cfg.exit_after if cfg.exit_after > 0 else None
        selector = selectors.DefaultSelector()
        selector.register(self.rfd, selectors.EVENT_READ)
        try:
            self.write_status()
            while not self.stop_reason:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self.stop("exit_after")
                    break
                if self.state["sent"] < cfg.count and now >= next_send:
                    if self._send(make_payload(self.tag, self.state["sent"] + 1)):
                        self.state["sent"] += 1
                    next_send = now + cfg.interval
                    self.write_status()
                    continue
                waits = [0.5]
                if self.state["sent"] < cfg.count:
                    waits.append(next_send - now)
                if deadline is not None:
                    waits.append(deadline - now)
                if not selector.select(max(0.0, min(waits))):
                    continue
                try:
                    data = os.read(self.rfd, 65536)
                except OSError:  # a pty whose other side closed reads EIO
                    data = b""
                if not data:
                    self.stop("eof")
                    break
                self._received(self.decoder.feed(data))
                self.write_status()
        except _StopSignalError:
            pass
        finally:
            selector.close()
            self.state["state"] = f"done:{self.stop_reason or 'error'}"
            self.write_status()
        return 0


def _ttyname(fd: int) -> str | None:
    try:
        return os.ttyname(fd)
    except OSError:
        return None


def load_config(path: str | None, args: argparse.Namespace) -> StandinConfig:
    """Merge the JSON config file (if any) with the command-line values.

    Args:
        path: The config file, or None.
        args: Parsed command line; None values are not set.

    Returns:
        The settings.
    """
    config = StandinConfig()
    if path:
        for key, value in json.loads(Path(path).read_text()).items():
            if not hasattr(config, key):
                raise ValueError(f"unknown stand-in setting {key!r} in {path}")
            setattr(config, key, value)
    for key in vars(config):
        value = getattr(args, key, None)
        if value is not None:
            setattr(config, key, value)
    return config


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (unknown arguments, e.g. pppd's, are ignored)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--config", help=f"JSON settings file (default: ${CONFIG_ENV})")
    parser.add_argument("--tag", help="tag in every frame; {pid} becomes the process ID")
    parser.add_argument("--count", type=int, help="frames to send")
    parser.add_argument("--interval", type=float, help="seconds between frames")
    parser.add_argument("--delay", type=float, help="seconds before the first frame")
    parser.add_argument("--protocol", type=lambda s: int(s, 0), help="PPP protocol number")
    parser.add_argument("--echo", action="store_true", default=None, help="echo tagged frames")
    parser.add_argument("--status", help="JSON status file")
    parser.add_argument("--status-dir", help="directory for standin-<pid>.json")
    parser.add_argument("--exit-after", type=float, help="stop after this many seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in on stdin/stdout.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _extra = build_parser().parse_known_args(argv)
    config = load_config(args.config or os.environ.get(CONFIG_ENV), args)
    if os.isatty(0):
        tty.setraw(0)
    standin = Standin(config, argv)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, standin.on_signal)
    return standin.run()


if __name__ == "__main__":
    sys.exit(main())
