"""Generic helpers for network namespaces, veth pairs, addresses and routes.

Everything here shells out to ``ip``, ``ethtool`` and friends (no third-party code) and
is meant for root. Namespaces made through a ``NetnsGroup`` are deleted by its
``cleanup`` (or when its ``with`` block ends), so a test or a lab can build a topology
and be sure it goes away:

    with NetnsGroup() as group:
        rtr = group.add("rprtr")
        cli = group.add("rpc1")
        veth(cli, "eth0", rtr, "in1")
        address(cli, "eth0", "192.168.1.1/24")
        ...

A veth end left in the root namespace (``other_netns=None``) can be added to an OVS
bridge; use ``tx_off`` on the ends that OVS does not own.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from demux.attach import CommandError as CommandError
from demux.attach import run as run

IFNAMSIZ = 15


def ns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """Prefix a command so that it runs inside ``netns`` (None: the current namespace).

    Args:
        netns: The namespace name, or None.
        argv: The command.

    Returns:
        The full command line.
    """
    return list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]


def ns_run(netns: str | None, *argv: str, check: bool = True, timeout: float = 30) -> str:
    """Run a command inside a namespace and return its stdout.

    Args:
        netns: The namespace name, or None for the current one.
        *argv: The command and its arguments.
        check: Raise ``CommandError`` when the command fails.
        timeout: Seconds before the command is killed.

    Returns:
        The command's standard output.
    """
    return run(ns_argv(netns, argv), check=check, timeout=timeout)


def unique_name(prefix: str, length: int = 6) -> str:
    """Return ``prefix`` followed by random hex digits, e.g. for namespace names.

    Args:
        prefix: The start of the name.
        length: How many hex digits to add.

    Returns:
        The name.
    """
    return prefix + uuid.uuid4().hex[:length]


def list_netns() -> set[str]:
    """The names of the named network namespaces."""
    listing = run(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def netns_exists(name: str) -> bool:
    """Tell whether a named network namespace exists."""
    return name in list_netns()


def add_netns(name: str) -> str:
    """Create a named network namespace with its loopback up.

    Args:
        name: The namespace name.

    Returns:
        The name.
    """
    run(["ip", "netns", "add", name])
    ns_run(name, "ip", "link", "set", "lo", "up")
    return name


def del_netns(name: str) -> None:
    """Delete a named network namespace if it exists (its interfaces go with it)."""
    run(["ip", "netns", "del", name], check=False)


def link_exists(ifname: str) -> bool:
    """Tell whether interface ``ifname`` exists (as ``/sys/class/net`` shows it)."""
    return Path("/sys/class/net", ifname).exists()


def del_link(ifname: str) -> None:
    """Delete interface ``ifname`` (a veth pair goes with either end) if it exists."""
    if link_exists(ifname):
        run(["ip", "link", "del", ifname], check=False)


def _check_ifname(name: str) -> None:
    if not 0 < len(name) <= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} must have 1 to {IFNAMSIZ} characters")


def veth(
    netns: str | None,
    ifname: str,
    other_netns: str | None,
    other_ifname: str,
    *,
    up: bool = True,
    mtu: int | None = None,
) -> None:
    """Create a veth pair with one end in each namespace (None: the root namespace).

    The pair is created inside ``netns``, so ``ifname`` only has to be free there.

    Args:
        netns: Namespace of the first end.
        ifname: Name of the first end.
        other_netns: Namespace of the second end.
        other_ifname: Name of the second end.
        up: Bring both ends up.
        mtu: MTU for both ends, or None for the default.
    """
    _check_ifname(ifname)
    _check_ifname(other_ifname)
    peer = ["peer", "name", other_ifname]
    if other_netns != netns:
        # A PID names that process's namespace: ours is the one we were called in.
        peer += ["netns", other_netns if other_netns is not None else str(os.getpid())]
    ns_run(netns, "ip", "link", "add", ifname, "type", "veth", *peer)
    for space, name in ((netns, ifname), (other_netns, other_ifname)):
        if mtu is not None:
            ns_run(space, "ip", "link", "set", name, "mtu", str(mtu))
        if up:
            ns_run(space, "ip", "link", "set", name, "up")


def link_up(netns: str | None, ifname: str) -> None:
    """Bring an interface up."""
    ns_run(netns, "ip", "link", "set", ifname, "up")


def address(netns: str | None, ifname: str, cidr: str) -> None:
    """Add an address (``a.b.c.d/len``) to an interface and bring it up."""
    ns_run(netns, "ip", "addr", "add", cidr, "dev", ifname)
    link_up(netns, ifname)


def route(netns: str | None, destination: str, via: str) -> None:
    """Add a route (``destination`` may be ``default``)."""
    ns_run(netns, "ip", "route", "add", destination, "via", via)


def bridge(netns: str | None, name: str, ports: Sequence[str] = ()) -> None:
    """Create a Linux bridge, enslave ``ports`` and bring everything up.

    Args:
        netns: Where the bridge lives.
        name: The bridge name.
        ports: Interfaces (in the same namespace) to attach.
    """
    _check_ifname(name)
    ns_run(netns, "ip", "link", "add", name, "type", "bridge")
    for port in ports:
        ns_run(netns, "ip", "link", "set", port, "master", name)
        link_up(netns, port)
    link_up(netns, name)


def tx_off(netns: str | None, ifname: str) -> None:
    """Turn off transmit checksum offload, so packets leave with finished checksums.

    Needed on every veth end whose packets something rewrites (OVS, an ALG, the
    capture you compare checksums on); harmless elsewhere.
    """
    ns_run(netns, "ethtool", "-K", ifname, "tx", "off")


def sysctl(netns: str | None, key: str, value: str) -> None:
    """Set a sysctl (e.g. ``net.ipv4.ip_forward``) inside a namespace."""
    ns_run(netns, "sysctl", "-q", "-w", f"{key}={value}")


def ping(netns: str | None, target: str, count: int = 1, timeout: float = 2) -> bool:
    """Tell whether ``target`` answers at least one of ``count`` pings."""
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(timeout), target]
    proc = subprocess.run(ns_argv(netns, argv), capture_output=True, timeout=30 + count)
    return proc.returncode == 0


class NetnsGroup:
    """Namespaces created together and deleted together.

    Use it as a context manager, or call ``cleanup`` in a ``finally`` block. Only
    namespaces made through ``add`` are ever deleted.
    """

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, name: str) -> str:
        """Create a namespace (it must not exist yet) and remember it.

        Args:
            name: The namespace name.

        Returns:
            The name.

        Raises:
            ValueError: When a namespace with that name already exists.
        """
        if netns_exists(name):
            raise ValueError(f"network namespace {name} already exists")
        self.names.append(name)
        add_netns(name)
        return name

    def cleanup(self) -> None:
        """Delete every namespace made through ``add``, newest first."""
        while self.names:
            del_netns(self.names.pop())

    def __enter__(self) -> NetnsGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


@contextlib.contextmanager
def netns_group() -> Iterator[NetnsGroup]:
    """Yield a ``NetnsGroup`` and clean it up afterwards, whatever happens."""
    group = NetnsGroup()
    try:
        yield group
    finally:
        group.cleanup()
