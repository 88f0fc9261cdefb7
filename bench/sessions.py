"""Figure 6: new ordinary sessions (TCP and UDP) per second through one path, and what
they cost the controller.

The server runs in the path's server namespace, the client in its client namespace
(``bench.tcp_peers``: a connection with one byte each way; ``bench.udp_peers``: a socket
of its own per session, one datagram each way), ``parallel`` sessions at a time, as fast
as they go. Around the client's run, from after the server listens to after the client
ends, where the path has them:

* the gateway app's ``packet_ins`` counter (over REST), before and after;
* the controller process's CPU time (``utime + stime`` of ``/proc/PID/stat``), before and
  after, and the wall time between the two samples.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path as FilePath

from bench.scale import packet_ins
from bench.setup_latency import SetupResult, run_pair
from bench.topologies import Path

PROTOCOLS = ("tcp", "udp")
_STAT_UTIME = 11
"""``utime``'s index among ``/proc/PID/stat``'s fields after the command name (field 14)."""


@dataclass
class SessionResult:
    """One run of new sessions of one protocol through one path.

    Attributes:
        latencies: seconds, connect (send) to answer, one per session answered.
        seconds: the client's whole run.
        window: wall seconds between the samples of the counters.
        packet_ins: the app's packet-ins during the window, None without the app.
        cpu_seconds: the controller's CPU time during the window, None without one.
        first: the inside host's first sessions through the path (the rest come after
            them).
    """

    peer: str
    proto: str
    sessions: int
    parallel: int
    seconds: float
    failed: int
    latencies: list[float] = field(repr=False)
    window: float = 0.0
    packet_ins: int | None = None
    cpu_seconds: float | None = None
    first: bool = False

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float | None:
        """Sessions answered per second, None for a run that asked for none or took no
        time."""
        return self.answered / self.seconds if self.sessions and self.seconds > 0 else None

    @property
    def median_us(self) -> float | None:
        return statistics.median(self.latencies) * 1e6 if self.latencies else None

    @property
    def slowest_us(self) -> float | None:
        return max(self.latencies) * 1e6 if self.latencies else None

    @property
    def packet_ins_per_session(self) -> float | None:
        if self.packet_ins is None or not self.sessions:
            return None
        return self.packet_ins / self.sessions

    @property
    def cpu_us_per_session(self) -> float | None:
        if self.cpu_seconds is None or not self.sessions:
            return None
        return self.cpu_seconds / self.sessions * 1e6

    @property
    def cpu_share(self) -> float | None:
        """The controller's CPU time over the window's wall time (1.0: one core busy)."""
        if self.cpu_seconds is None or self.window <= 0:
            return None
        return self.cpu_seconds / self.window

    def as_setup(self) -> SetupResult:
        """The same run as figure 4's result (TCP)."""
        return SetupResult(self.peer, self.proto, self.sessions, self.parallel, self.seconds,
                           self.failed, list(self.latencies))

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        del data["latencies"]
        data.update(figure="sessions", answered=self.answered, per_second=self.per_second,
                    median_us=self.median_us, slowest_us=self.slowest_us,
                    packet_ins_per_session=self.packet_ins_per_session,
                    cpu_us_per_session=self.cpu_us_per_session, cpu_share=self.cpu_share)
        return data


def cpu_seconds(stat: str, ticks_per_second: int) -> float:
    """A process's user and system CPU time from the text of its ``/proc/PID/stat``."""
    fields = stat.rsplit(")", 1)[1].split()
    if len(fields) <= _STAT_UTIME + 1:
        raise ValueError(f"too few fields in a /proc/PID/stat line: {stat!r}")
    return (int(fields[_STAT_UTIME]) + int(fields[_STAT_UTIME + 1])) / ticks_per_second


def process_cpu_seconds(pid: int) -> float:
    """Process ``pid``'s CPU time so far (all its threads)."""
    return cpu_seconds(FilePath(f"/proc/{pid}/stat").read_text(),
                       os.sysconf("SC_CLK_TCK"))


class _Sampler:
    """The path's counters at the start of the client's run and at its end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.times: list[float] = []
        self.packet_ins: list[int] = []
        self.cpu: list[float] = []

    def sample(self) -> None:
        if self.path.rest_url is not None:
            self.packet_ins.append(packet_ins(self.path.rest_url))
        if self.path.controller_pid is not None:
            self.cpu.append(process_cpu_seconds(self.path.controller_pid))
        self.times.append(time.monotonic())

    def window(self) -> float:
        return self.times[-1] - self.times[0] if self.times else 0.0

    def delta_packet_ins(self) -> int | None:
        return self.packet_ins[1] - self.packet_ins[0] if len(self.packet_ins) == 2 else None

    def delta_cpu(self) -> float | None:
        return self.cpu[1] - self.cpu[0] if len(self.cpu) == 2 else None


def measure_sessions(path: Path, proto: str, sessions: int, parallel: int = 1,
                     timeout: float = 600, first: bool = False) -> SessionResult:
    """Open ``sessions`` new ``proto`` sessions (:data:`PROTOCOLS`), ``parallel`` at a
    time, through ``path`` (``first``: the inside host's first)."""
    if proto == "tcp":
        server = ["bench.tcp_peers", "server", path.server_ip]
        client = ["bench.tcp_peers", "client", path.server_ip, "--connections",
                  str(sessions), "--parallel", str(parallel)]
    elif proto == "udp":
        server = ["bench.udp_peers", "server", path.server_ip]
        client = ["bench.udp_peers", "client", path.server_ip, "--sessions", str(sessions),
                  "--parallel", str(parallel)]
    else:
        raise ValueError(f"proto must be one of {', '.join(PROTOCOLS)}: {proto!r}")
    sampler = _Sampler(path)
    data = run_pair(path, server, client, timeout, ready=sampler.sample)
    sampler.sample()
    return SessionResult(path.name, proto, sessions, parallel, float(data["seconds"]),
                         int(data["failed"]), [float(x) for x in data["latencies"]],
                         sampler.window(), sampler.delta_packet_ins(),
                         sampler.delta_cpu(), first)

