"""Small helpers for end-to-end tests: commands, namespaces, free ports."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence


def sh(args: Sequence[str], check: bool = True, timeout: float = 30) -> str:
    """Run a command and return its stdout; raise with stderr on failure."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ns(name: str, *args: str, check: bool = True, timeout: float = 30) -> str:
    """Run a command inside network namespace ``name``."""
    return sh(["ip", "netns", "exec", name, *args], check=check, timeout=timeout)


def free_tcp_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
