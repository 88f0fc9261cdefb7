"""Run real PPTP peers (pptpd, pptp-linux) with the pppd stand-in inside namespaces.

These machines have no kernel PPP, so pppd cannot run; ``topo.standin_ppp`` takes its
place on both sides (see that module). Each peer runs as::

    ip netns exec NETNS unshare --mount --pid --fork --kill-child sh RUN_DIR/NAME.sh

- the private PID namespace makes every process of the peer (pptpd's pptpctrl children
  and stand-ins; pptp's call manager) die with it, so ``stop`` leaves nothing behind;
- the private mount namespace gets its own ``/dev`` (a tmpfs with the host's device nodes
  and ``/dev/pts`` bound in) whose ``/dev/log`` leads to a socket in the run directory, so
  the syslog messages of pptpd and pptp land in ``RUN_DIR/NAME.syslog``;
- for a client it also gets a private tmpfs on ``/var/run/pptp``, so every client has its
  own pptp call manager (``share_with`` puts a second client in the first one's mount
  namespace instead: two calls on one control connection).

Everything a peer needs (configs, wrapper scripts, status files, logs) is written to its
run directory (see ``topo.peer_files``); nothing in ``/etc`` is read or changed.

Example::

    server = start_pptpd("rpsrv", "203.0.113.1", run_dir / "srv")
    client = start_pptp_client("rpc1", "203.0.113.1", run_dir / "c1", tag="c1")
    wait_for(lambda: client.received_tags().get(server_tag) ...)
    client.stop(); server.stop()
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alg.codec import PPTP_PORT
from topo.netns import ns_argv
from topo.peer_files import (
    SyslogSink,
    private_dev_script,
    read_status,
    read_status_dir,
    write_standin_wrapper,
)
from topo.process import descendants, process_children, terminate
from topo.standin_ppp import StandinConfig

_SOCAT_SPECIAL = set(":,!\"' \t\\")

_CALL_ESTABLISHED = re.compile(r"Outgoing call established \(call ID (\d+), peer's call ID (\d+)\)")

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    Args:
        predicate: Called repeatedly; exceptions propagate.
        timeout: Seconds to wait at most.
        interval: Seconds between two calls.
        what: Named in the error message.

    Returns:
        The first true value.

    Raises:
        TimeoutError: When the time is up.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)




@dataclass
class PeerProcess:
    """A peer started by this module: its process, files and how to stop it.

    Attributes:
        name: Short name, used for the files in ``run_dir``.
        netns: The network namespace it runs in (None: the current one).
        run_dir: Its directory (configs, scripts, status files, logs).
        argv: The command line started.
        popen: The ``unshare`` process (the peer is its child, PID 1 of a PID namespace).
        output_path: stdout and stderr of the peer.
        syslog_path: syslog messages of the peer, when captured.
    """

    name: str
    netns: str | None
    run_dir: Path
    argv: list[str]
    popen: subprocess.Popen[bytes]
    output_path: Path
    syslog_path: Path | None = None
    _sink: SyslogSink | None = field(default=None, repr=False)
    _inner: int | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """PID of the ``unshare`` process started."""
        return self.popen.pid

    def inner_pid(self, timeout: float = 2.0) -> int | None:
        """PID (as seen here) of the peer's first process, PID 1 of its PID namespace."""
        if self._inner is None:
            deadline = time.monotonic() + timeout
            while self._inner is None and self.alive() and time.monotonic() < deadline:
                kids = process_children().get(self.pid, [])
                if kids:
                    self._inner = kids[0]
                else:
                    time.sleep(0.02)
        return self._inner

    def pids(self) -> list[int]:
        """Every PID of the peer still running (``unshare`` and all below it)."""
        return [self.pid, *descendants(self.pid)] if self.alive() else []

    def alive(self) -> bool:
        """Tell whether the peer still runs."""
        return self.popen.poll() is None

    def output(self) -> str:
        """Return what the peer wrote on stdout and stderr so far."""
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def syslog(self) -> str:
        """Return the peer's syslog messages so far ("" when not captured)."""
        if self.syslog_path is None or not self.syslog_path.exists():
            return ""
        return self.syslog_path.read_text(errors="replace")

    def stop(self, grace: float = 2.0) -> int | None:
        """Stop the peer: SIGTERM to all its processes, SIGKILL after ``grace`` seconds.

        SIGKILL goes to PID 1 of the peer's PID namespace, which takes every process of
        the namespace with it. Safe to call more than once.

        Args:
            grace: Seconds to wait for a clean exit.

        Returns:
            The exit status of ``unshare``.
        """
        if self.alive():
            inner = self.inner_pid(timeout=0.2)
            stopped = inner is not None and terminate(
                inner, grace, 5.0, popen=self.popen, also=descendants(inner))
            if not stopped:
                terminate(self.pid, 0.0 if inner is not None else grace, 5.0, popen=self.popen)
        if self._sink is not None:
            time.sleep(0.05)  # let the last datagrams in
            self._sink.close()
            self._sink = None
        with contextlib.suppress(OSError):
            (self.run_dir / ".hostdev").rmdir()
        return self.popen.returncode


@dataclass
class PptpServer(PeerProcess):
    """A running pptpd; one stand-in per call writes ``status_dir/standin-<pid>.json``.

    Attributes:
        listen_ip: The address pptpd listens on.
        status_dir: Where the call stand-ins write their status.
        conf_path: pptpd's config file.
    """

    listen_ip: str = ""
    status_dir: Path = Path()
    conf_path: Path = Path()

    def standins(self) -> list[dict[str, Any]]:
        """Return the status of every stand-in pptpd started so far, oldest first.

        Each has ``tag`` (``<tag prefix><pid>``), ``sent``, ``received``,
        ``received_tags`` and ``argv`` (with ``ipparam <client address as seen here>``).
        """
        return read_status_dir(self.status_dir)

    def listening(self) -> bool:
        """Tell whether pptpd accepts connections on port 1723 yet."""
        out = subprocess.run(
            ns_argv(self.netns, ["ss", "-Hltn", f"sport = :{PPTP_PORT}"]),
            capture_output=True, text=True, timeout=10,
        ).stdout
        return f"{self.listen_ip}:{PPTP_PORT}" in out


@dataclass
class PptpClient(PeerProcess):
    """A running pptp-linux client with its stand-in.

    Attributes:
        server_ip: The server it calls.
        tag: The tag of its stand-in's frames.
        status_path: The stand-in's status file.
    """

    server_ip: str = ""
    tag: str = ""
    status_path: Path = Path()

    def status(self) -> dict[str, Any] | None:
        """Return the stand-in's status (None before it started)."""
        return read_status(self.status_path)

    def received_tags(self) -> dict[str, int]:
        """Return how many frames of each tag the stand-in received."""
        status = self.status()
        return dict(status["received_tags"]) if status else {}

    def calls(self) -> list[tuple[int, int]]:
        """Return ``(call ID, peer's call ID)`` of each call pptp set up, from its syslog.

        pptp-linux draws its Call ID at random; this is how to learn it. With a shared
        call manager, the calls of every client sharing it are listed (they share the
        syslog of the first one).
        """
        return [(int(m[1]), int(m[2])) for m in _CALL_ESTABLISHED.finditer(self.syslog())]


def _spawn(
    netns: str | None,
    name: str,
    run_dir: Path,
    body: str,
    *,
    syslog: bool,
    prefix: Sequence[str] = ("unshare", "--mount", "--pid", "--fork", "--kill-child"),
    private_dev: bool = True,
) -> tuple[list[str], subprocess.Popen[bytes], Path, Path | None, SyslogSink | None]:
    sink = None
    syslog_path = None
    lines = ["set -e"]
    if syslog:
        syslog_path = run_dir / f"{name}.syslog"
        sink = SyslogSink(syslog_path, run_dir / f"{name}.log.sock")
        if private_dev:
            lines.append(private_dev_script(run_dir, sink.sock_path))
    lines.append(body)
    script = run_dir / f"{name}.sh"
    script.write_text("\n".join(lines) + "\n")
    argv = ns_argv(netns, [*prefix, "sh", str(script)])
    output_path = run_dir / f"{name}.out"
    try:
        with output_path.open("wb") as out:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT)
    except BaseException:
        if sink is not None:
            sink.close()
        raise
    return argv, popen, output_path, syslog_path, sink


def start_pptpd(
    netns: str | None,
    listen_ip: str,
    run_dir: Path,
    *,
    name: str = "pptpd",
    standin: StandinConfig | None = None,
    tag_prefix: str = "srv",
    syslog: bool = True,
    debug: bool = True,
    extra_conf: Sequence[str] = (),
    ready_timeout: float = 10.0,
) -> PptpServer:
    """Start pptpd (the PAC) in ``netns`` with the stand-in as its pppd.

    Writes ``RUN_DIR/pptpd.conf`` (``ppp``, ``option`` (an empty file), ``pidfile``,
    ``listen``, plus ``extra_conf`` lines, e.g. ``connections 5`` or ``localip ...``),
    runs ``pptpd -c CONF -f`` and waits until it listens. Each call gets its own
    stand-in, tagged ``<tag_prefix><pid>`` unless ``standin.tag`` says otherwise.

    Args:
        netns: The server's network namespace (None: the current one, e.g. a Mininet host's).
        listen_ip: The address to listen on (must be configured in ``netns``).
        run_dir: Directory for its files (created).
        name: Base name of its files.
        standin: The call stand-ins' settings (status_dir is always set here).
        tag_prefix: Tag of the call stand-ins' frames, before their PID.
        syslog: Capture pptpd's syslog messages in ``RUN_DIR/NAME.syslog``.
        debug: Run pptpd with ``-d`` (much more in the syslog).
        extra_conf: More lines for the config file.
        ready_timeout: Seconds to wait for the listening socket.

    Returns:
        The running server.

    Raises:
        TimeoutError: When pptpd does not listen in time (it is stopped first).
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    status_dir = run_dir / "standins"
    status_dir.mkdir(exist_ok=True)
    config = standin or StandinConfig(tag=tag_prefix + "{pid}", count=40, interval=0.25)
    config.status_dir = str(status_dir)
    config.status = ""
    wrapper = write_standin_wrapper(run_dir / "standin.sh", config)
    options = run_dir / "ppp-options"
    options.write_text("# options for the pppd stand-in (ignored)\n")
    conf = run_dir / f"{name}.conf"
    conf.write_text("\n".join([
        f"ppp {wrapper}",
        f"option {options}",
        f"pidfile {run_dir / (name + '.pid')}",
        f"listen {listen_ip}",
        *extra_conf,
    ]) + "\n")
    flags = "-f -d" if debug else "-f"
    body = f"exec pptpd -c {shlex.quote(str(conf))} {flags}"
    argv, popen, out, syslog_path, sink = _spawn(netns, name, run_dir, body, syslog=syslog)
    server = PptpServer(name, netns, run_dir, argv, popen, out, syslog_path, sink,
                        listen_ip=listen_ip, status_dir=status_dir, conf_path=conf)
    try:
        wait_for(lambda: server.listening() or not server.alive(), ready_timeout,
                 what="pptpd to listen")
        if not server.alive():
            raise RuntimeError(f"pptpd exited: {server.output()} {server.syslog()}")
    except BaseException:
        server.stop()
        raise
    return server


def _socat_safe(text: str) -> str:
    if _SOCAT_SPECIAL & set(text):
        raise ValueError(f"{text!r} cannot go into a socat address")
    return text


def start_pptp_client(
    netns: str | None,
    server_ip: str,
    run_dir: Path,
    tag: str,
    *,
    name: str | None = None,
    standin: StandinConfig | None = None,
    share_with: PptpClient | None = None,
    syslog: bool = True,
    loglevel: int = 1,
    extra_args: Sequence[str] = (),
) -> PptpClient:
    """Start pptp-linux (the PNS) in ``netns``, its PPP side connected to a stand-in.

    Runs ``socat EXEC:"pptp SERVER --nolaunchpppd --nohostroute ...",pty,raw,echo=0
    EXEC:WRAPPER`` with a private tmpfs on ``/var/run/pptp``, so the client has its own
    call manager and control connection. With ``share_with``, it runs in that client's
    mount namespace instead and shares its call manager: a second call on the same
    control connection (both clients must be in the same network namespace).

    Args:
        netns: The client's network namespace (None: the current one).
        server_ip: The PPTP server to call.
        run_dir: Directory for its files (created).
        tag: Tag of its stand-in's frames (no ``:``).
        name: Base name of its files (default ``pptp-<tag>``).
        standin: The stand-in's settings (tag and status are always set here).
        share_with: A running client whose call manager to share.
        syslog: Capture pptp's syslog messages in ``RUN_DIR/NAME.syslog``.
        loglevel: pptp's ``--loglevel`` (0 to 2).
        extra_args: More pptp arguments (no spaces, quotes, ``:`` or ``,`` in them).

    Returns:
        The running client (check ``status()`` for the stand-in's counters).
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"pptp-{tag}"
    status_path = run_dir / f"{name}.standin.json"
    config = standin or StandinConfig(count=40, interval=0.25)
    config.tag = tag
    config.status = str(status_path)
    config.status_dir = ""
    wrapper = write_standin_wrapper(run_dir / f"{name}.standin.sh", config)
    pptp = " ".join(_socat_safe(a) for a in [
        "pptp", server_ip, "--nolaunchpppd", "--nohostroute", "--loglevel", str(loglevel),
        *extra_args,
    ])
    socat = (f"exec socat EXEC:'{pptp}',pty,raw,echo=0 "
             f"EXEC:{shlex.quote(_socat_safe(str(wrapper)))}")
    if share_with is None:
        body = "mkdir -p /var/run/pptp\nmount -t tmpfs -o mode=755 tmpfs /var/run/pptp\n" + socat
        prefix: tuple[str, ...] = ("unshare", "--mount", "--pid", "--fork", "--kill-child")
        private_dev = True
    else:
        if share_with.netns != netns:
            raise ValueError("a client sharing a call manager must be in the same namespace")
        owner = share_with.inner_pid()
        if owner is None:
            raise RuntimeError(f"{share_with.name} does not run")
        body = socat
        prefix = ("nsenter", f"--mount=/proc/{owner}/ns/mnt", "unshare", "--pid", "--fork",
                  "--kill-child")
        private_dev = False
        syslog = False  # its messages go to the first client's syslog
    argv, popen, out, syslog_path, sink = _spawn(
        netns, name, run_dir, body, syslog=syslog, prefix=prefix, private_dev=private_dev)
    return PptpClient(name, netns, run_dir, argv, popen, out, syslog_path, sink,
                      server_ip=server_ip, tag=tag, status_path=status_path)


def stop_all(peers: Sequence[PeerProcess | None], grace: float = 2.0) -> None:
    """Stop several peers, in reverse order, ignoring the ones that are None.

    Args:
        peers: The peers.
        grace: Seconds each gets for a clean exit.
    """
    for peer in reversed(list(peers)):
        if peer is not None:
            with contextlib.suppress(Exception):
                peer.stop(grace)
