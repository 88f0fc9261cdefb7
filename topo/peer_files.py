"""The files of a peer's run directory: the stand-in's wrapper, status files, syslog.

``write_standin_wrapper`` writes the script and config that pptpd or pptp runs as its
pppd, ``read_status`` and ``read_status_dir`` read the status files the stand-ins write,
and ``SyslogSink`` with ``private_dev_script`` puts a peer's syslog messages in a file:
the peer's private ``/dev`` has ``/dev/log`` leading to the sink's socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from topo.standin_ppp import StandinConfig

STANDIN_FILE = Path(__file__).resolve().with_name("standin_ppp.py")
UNIX_PATH_MAX = 100


def write_standin_wrapper(
    path: Path, config: StandinConfig, python: str = sys.executable
) -> Path:
    """Write an executable shell script that runs the stand-in with a config file.

    The config goes next to the script (``path`` with the suffix ``.json``). pptpd's
    ``ppp`` option wants an executable path and passes pppd's arguments, which the
    stand-in records and otherwise ignores.

    Args:
        path: Where to write the script.
        config: The stand-in's settings.
        python: The interpreter to run it with.

    Returns:
        The script's path.
    """
    conf = path.with_suffix(".json")
    conf.write_text(json.dumps(asdict(config), indent=2))
    path.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(python)} {shlex.quote(str(STANDIN_FILE))} "
        f"--config {shlex.quote(str(conf))} \"$@\"\n"
    )
    path.chmod(0o755)
    return path


def read_status(path: Path) -> dict[str, Any] | None:
    """Read a stand-in's JSON status file.

    Args:
        path: The file.

    Returns:
        The status, or None while the file does not exist yet.
    """
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def read_status_dir(directory: Path) -> list[dict[str, Any]]:
    """Read every ``standin-*.json`` in a directory, in the order they were launched.

    Every peer runs in a PID namespace of its own, so its children's PIDs rise in the
    order they were forked. The ``started`` time does not give that order: two stand-ins
    forked a moment apart race through the interpreter's start-up.
    """
    found = [read_status(p) for p in sorted(directory.glob("standin-*.json"))]
    return sorted((s for s in found if s is not None), key=lambda s: int(s["pid"]))


class SyslogSink:
    """Receive syslog datagrams on a unix socket and append them, one a line, to a file.

    Args:
        log_path: The text file to append to.
        sock_path: Where to bind the socket; a short temporary path is used instead when
            this one is too long for a unix socket.
    """

    def __init__(self, log_path: Path, sock_path: Path):
        self.log_path = log_path
        self._tmpdir: str | None = None
        if len(str(sock_path)) > UNIX_PATH_MAX:
            self._tmpdir = tempfile.mkdtemp(prefix="rplog")
            sock_path = Path(self._tmpdir) / "log.sock"
        self.sock_path = sock_path
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"syslog {log_path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.log_path.open("a") as log:
            while not self._stop.is_set():
                try:
                    data = self._sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                text = data.decode("utf-8", "replace").rstrip("\n\0")
                if text.startswith("<") and ">" in text[:5]:
                    text = text.split(">", 1)[1]
                log.write(text + "\n")
                log.flush()

    def close(self) -> None:
        """Stop receiving and remove the socket."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()
        if self._tmpdir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._tmpdir)


def private_dev_script(run_dir: Path, log_socket: Path) -> str:
    """Shell lines that give the mount namespace its own /dev with /dev/log -> socket."""
    hostdev = shlex.quote(str(run_dir / ".hostdev"))
    sock = shlex.quote(str(log_socket))
    return f"""mkdir -p {hostdev}
mount --rbind /dev {hostdev}
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero full random urandom tty; do
  touch /dev/$n && mount --bind {hostdev}/$n /dev/$n
done
mkdir /dev/pts /dev/shm
mount --rbind {hostdev}/pts /dev/pts
mount --rbind {hostdev}/shm /dev/shm
ln -s pts/ptmx /dev/ptmx
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
ln -s {sock} /dev/log
"""
