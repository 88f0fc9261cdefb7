"""Attach the GRE demultiplexer (``demux.program``) to an OVS bridge, or detach it: the
``pptp-alg-demux`` command.

``attach`` makes a veth pair, adds one end to the bridge as the demultiplexer's port,
mounts a BPF filesystem at the pin directory (unless one is there), loads the program
and its table and pins them there, and attaches the program at TC ingress of the other
end (``tc qdisc clsact`` and ``tc filter ... bpf direct-action object-pinned``). Then the
app's ``[nat] gre_demux_port`` and ``gre_demux_dir`` name the port and the directory.
``detach`` undoes it: deleting the veth removes the filter, unmounting the directory
frees the program and the table.

For a bridge of your own (as root)::

    pptp-alg-demux attach --bridge br0 --port pptp-dmx --dir /run/pptp-alg-dmx
    pptp-alg-demux detach --bridge br0 --port pptp-dmx --dir /run/pptp-alg-dmx

The program sees only a veth, so this is the same under Open vSwitch's userspace
(``netdev``) and kernel datapaths. Standard library only; it runs ``ip``, ``sysctl``,
``ethtool``, ``ovs-vsctl``, ``mount`` and ``tc``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from demux.table import Demux

BPF_MAGIC = "bpf"


class CommandError(RuntimeError):
    """A command exited with a non-zero status.

    Attributes:
        argv: The command.
        returncode: Its exit status.
        stderr: What it wrote on stderr.
    """

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str):
        super().__init__(f"{' '.join(argv)} failed ({returncode}): {stderr.strip()}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    """Run a command and return its stdout.

    Args:
        argv: The command and its arguments.
        check: Raise ``CommandError`` when the command fails.
        timeout: Seconds before the command is killed.

    Returns:
        The command's standard output.

    Raises:
        CommandError: When ``check`` is set and the command exits non-zero.
    """
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def peer_name(port: str) -> str:
    """The veth end the program runs on (``<port>p``, cut to 15 characters)."""
    return (port[:14] + "p") if len(port) >= 15 else port + "p"


def _is_bpffs(directory: str) -> bool:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == os.path.realpath(directory):
            return fields[2] == BPF_MAGIC
    return False


def attach(bridge: str, port: str, directory: str, ofport: int | None = None) -> None:
    """Create the demultiplexer's port on ``bridge`` and start its program.

    Raises:
        CommandError: a command failed (what was made stays for
            :func:`detach`).
        alg.errors.BpfError: the kernel refused the program or its maps.
    """
    peer = peer_name(port)
    run(["ip", "link", "add", port, "type", "veth", "peer", "name", peer])
    for end in (port, peer):
        run(["sysctl", "-q", "-w", f"net.ipv6.conf.{end}.disable_ipv6=1"], check=False)
        run(["ethtool", "-K", end, "tx", "off"], check=False)
        run(["ip", "link", "set", end, "up"])
    argv = ["ovs-vsctl", "--", "add-port", bridge, port]
    if ofport is not None:
        argv += ["--", "set", "interface", port, f"ofport_request={ofport}"]
    run(argv)
    os.makedirs(directory, exist_ok=True)
    if not _is_bpffs(directory):
        run(["mount", "-t", "bpf", "bpf", directory])
    demux = Demux.load()
    try:
        demux.pin(directory)
    finally:
        demux.close()
    run(["tc", "qdisc", "add", "dev", peer, "clsact"])
    run(["tc", "filter", "add", "dev", peer, "ingress", "bpf", "direct-action",
         "object-pinned", f"{directory}/program"])


def detach(bridge: str, port: str, directory: str) -> None:
    """Remove what :func:`attach` made; what is not there is skipped."""
    run(["ovs-vsctl", "--if-exists", "del-port", bridge, port], check=False)
    if Path("/sys/class/net", port).exists():
        run(["ip", "link", "del", port], check=False)
    if os.path.isdir(directory):
        if _is_bpffs(directory):
            run(["umount", directory], check=False)
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def stop_program(port: str) -> None:
    """Take the program off the port's veth (the component "dies": packets sent to the
    port are lost until it is attached again). For tests."""
    run(["tc", "qdisc", "del", "dev", peer_name(port), "clsact"], check=False)


def start_program(port: str, directory: str) -> None:
    """Attach the pinned program again after :func:`stop_program`."""
    peer = peer_name(port)
    run(["tc", "qdisc", "add", "dev", peer, "clsact"])
    run(["tc", "filter", "add", "dev", peer, "ingress", "bpf", "direct-action",
         "object-pinned", f"{directory}/program"])


def main(argv: Sequence[str] | None = None) -> int:
    """``pptp-alg-demux attach|detach``: attach prints the two ``[nat]`` options."""
    parser = argparse.ArgumentParser(
        prog="pptp-alg-demux",
        description="Attach the GRE demultiplexer to an OVS bridge (as root), or detach it.")
    parser.add_argument("action", choices=("attach", "detach"))
    parser.add_argument("--bridge", required=True)
    parser.add_argument("--port", default="pptp-dmx", help="the OVS port to create")
    parser.add_argument("--dir", default="/run/pptp-alg-dmx",
                        help="where to mount a BPF filesystem and pin the program")
    args = parser.parse_args(argv)
    if args.action == "attach":
        attach(args.bridge, args.port, args.dir)
        print(f"[nat] gre_demux_port = {args.port}\n[nat] gre_demux_dir = {args.dir}")
    else:
        detach(args.bridge, args.port, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
