"""A real etcd cluster on loopback, for the tests and the lab: members each with their
own ports and data folder, stopped by PID.

The ``etcd`` binary is Debian's ``etcd-server`` (scripts/setup.sh installs it). Tests
take :func:`etcd_binary` to skip, with that reason, where it is missing.
:func:`etcd_cluster` gives a test a cluster on free ports for the length of a ``with``
block. The lab (``topo.lab.standbys``) builds its :class:`Cluster` on ports it picked,
in its own folder, with PID files and the members in sessions of their own, so that they
outlive the command that started them; its ``down`` stops them with :func:`stop_pid`.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from topo import process as processes

HEALTHY_WITHIN = 30.0
"""Seconds for every member to answer ``/health`` with a leader."""
STOP_WITHIN = 5.0
"""Seconds a member has to end after SIGTERM before SIGKILL."""


def etcd_binary() -> str | None:
    """The path of ``etcd``, None where it is not installed."""
    return shutil.which("etcd")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Member:
    """One member: its name, client and peer URLs, data folder, log and process, and the
    file its PID goes to at start (None: no file)."""

    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    pid_file: Path | None = None

    def healthy(self) -> bool:
        """Whether the member answers ``/health`` with ``true`` (it has a leader)."""
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0) as answer:
                return bool(json.load(answer).get("health") == "true")
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """End the member's process by its PID (SIGTERM, then SIGKILL)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_WITHIN)


@dataclass
class Cluster:
    """The members of one cluster; with ``own_session``, each member starts in a session
    of its own (a signal to the starter's process group does not reach it)."""

    members: list[Member]
    folder: Path
    token: str = field(default="")
    own_session: bool = False

    @property
    def endpoints(self) -> list[str]:
        """The members' client URLs."""
        return [m.client_url for m in self.members]

    def start(self, member: Member, state: str = "new") -> None:
        """Start ``member`` (``state``: ``new`` for the first start, else ``existing``)."""
        binary = etcd_binary()
        assert binary is not None
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(
                [binary, "--name", member.name, "--data-dir", str(member.data_dir),
                 "--listen-client-urls", member.client_url,
                 "--advertise-client-urls", member.client_url,
                 "--listen-peer-urls", member.peer_url,
                 "--initial-advertise-peer-urls", member.peer_url,
                 "--initial-cluster", initial, "--initial-cluster-state", state,
                 "--initial-cluster-token", self.token,
                 "--heartbeat-interval", "50", "--election-timeout", "500"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=self.own_session)
        if member.pid_file is not None:
            member.pid_file.write_text(f"{member.process.pid}\n")

    def wait_healthy(self, members: list[Member] | None = None,
                     within: float = HEALTHY_WITHIN) -> None:
        """Wait until every member of ``members`` (all) answers healthy.

        Raises:
            RuntimeError: one did not within ``within`` seconds (with its log's end).
        """
        end = time.monotonic() + within
        for member in members or self.members:
            while not member.healthy():
                if member.process is not None and member.process.poll() is not None:
                    raise RuntimeError(f"etcd {member.name} ended: {self._tail(member)}")
                if time.monotonic() > end:
                    raise RuntimeError(f"etcd {member.name} not healthy within {within} s: "
                                       f"{self._tail(member)}")
                time.sleep(0.1)

    @staticmethod
    def _tail(member: Member) -> str:
        return member.log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        """Stop every member by PID."""
        for member in self.members:
            member.stop()


def is_member(pid: int, data_dir: Path | str) -> bool:
    """Whether ``pid`` is a live ``etcd`` whose data folder is ``data_dir``."""
    if not processes.alive(pid):
        return False
    argv = processes.cmdline(pid)
    return (bool(argv) and Path(argv[0]).name == "etcd"
            and any(a == "--data-dir" and b == str(data_dir)
                    for a, b in itertools.pairwise(argv)))


def stop_pid(pid: int, data_dir: Path | str) -> bool:
    """Stop ``pid`` (SIGTERM, then SIGKILL) if it is the member of ``data_dir``.

    Returns:
        Whether no such member runs any longer.
    """
    if not is_member(pid, data_dir):
        return True
    return processes.terminate(pid, STOP_WITHIN, STOP_WITHIN)


@contextmanager
def etcd_cluster(size: int = 3) -> Iterator[Cluster]:
    """A cluster of ``size`` members on loopback, healthy; stopped and its folders
    removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="etcd-test-"))
    members = [
        Member(f"m{i}", f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}",
               folder / f"m{i}.etcd", folder / f"m{i}.log")
        for i in range(size)
    ]
    cluster = Cluster(members, folder, token=f"test-{os.getpid()}-{folder.name}")
    try:
        for member in members:
            cluster.start(member)
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
