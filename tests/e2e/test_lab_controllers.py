"""A lab of two controllers on etcd, driven by its command line: ``up --controllers 2
--store etcd``, ``status``, ``kill-controller --master``, ``wait-master``,
``start-controller``, ``cut-controller``, ``uncut-controller`` and ``down``, with a real
etcd cluster, real OVS and the real app.

The standby is master within a few seconds of the master's SIGKILL (the election's lease
is 3 s), and traffic across the NAT passes through the new master; a master cut from
etcd loses its mastership and ends with status 3, which ``status`` shows as such. The
lab has a name of its own and is taken down in a ``finally``, whatever happens; the test
then checks that none of its namespaces, bridges or processes is left.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.gateway_lab import lab_name
from topo import etcd_cluster, lab, netns, process
from topo.lab import ovs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
    pytest.mark.skipif(etcd_cluster.etcd_binary() is None,
                       reason="no etcd binary (Debian's etcd-server)"),
]

REPO = Path(__file__).resolve().parents[2]
#: Seconds from the master's SIGKILL until the standby is master: the lease (3 s), the
#: election, the switch's role reply, with room for a loaded machine.
FAILOVER_WITHIN = 10.0
LINE = re.compile(r"^\s*controller (\d) \(pid (\d+|None), c\d(, cut from etcd)?\): (.*)$")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topo.lab", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def ok(*args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, (f"{' '.join(args)}: exit {done.returncode}\n"
                                  f"{done.stdout}\n{done.stderr}")
    return done.stdout


def controllers(name: str) -> dict[int, tuple[bool, str]]:
    """Each controller's index -> (cut from etcd, what ``status`` says of it).

    A standby campaigns every second (``alg.election``): for the few milliseconds of its
    requests ``status`` may catch it as ``candidate``, which counts as ``standby`` here
    (seen in CI).
    """
    out = cli("status", "--name", name).stdout.replace(" candidate", " standby")
    return {int(m.group(1)): (m.group(3) is not None, m.group(4))
            for m in map(LINE.match, out.splitlines()) if m}


def naming(folder: Path) -> list[int]:
    """The processes whose command line names something in ``folder``."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()
            and process.alive(int(entry.name))
            and any(arg.startswith(f"{folder}/") for arg in process.cmdline(int(entry.name)))]


def until(what: str, condition: Callable[[], bool], within: float) -> float:
    """Wait until ``condition`` holds; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, f"not within {within} s: {what}"
        time.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.timeout(240)
def test_two_controllers_on_etcd_fail_over_and_the_lab_cleans_up() -> None:
    name = lab_name()
    try:
        ok("up", "--name", name, "--clients", "1", "--controllers", "2", "--store", "etcd",
           "--timeout", "60")
        state = lab.read_state(name)
        assert state is not None and state.store == "etcd" and len(state.controllers) == 2
        status = cli("status", "--name", name)
        assert status.returncode == 0, status.stdout
        roles = controllers(name)
        assert sorted(what for _, what in roles.values()) == ["default master",
                                                              "default standby"]
        first = int(ok("wait-master", "--name", name, "--timeout", "10"))
        other = 3 - first
        client, server = state.client(1), state.server_ip
        assert netns.ping(client, server, count=3)

        killed = time.monotonic()
        ok("kill-controller", "--name", name, "--master")
        assert int(ok("wait-master", "--name", name, "--timeout",
                      str(FAILOVER_WITHIN))) == other
        took = time.monotonic() - killed
        assert took < FAILOVER_WITHIN
        assert controllers(name)[first] == (False, "not running (killed by SIGKILL)")
        assert netns.ping(client, server, count=3)

        ok("start-controller", "--name", name, "--index", str(first))
        assert controllers(name) == {first: (False, "default standby"),
                                     other: (False, "default master")}

        ok("cut-controller", "--name", name, "--index", str(other))
        assert controllers(name)[other][0]
        until("the master cut from etcd ends with status 3 and the other is master",
              lambda: controllers(name) == {first: (False, "default master"),
                                            other: (True, "not running (exited 3)")},
              FAILOVER_WITHIN + 10)
        assert netns.ping(client, server, count=3)
        ok("uncut-controller", "--name", name, "--index", str(other))
        ok("start-controller", "--name", name, "--index", str(other))
        assert controllers(name) == {first: (False, "default master"),
                                     other: (False, "default standby")}
        assert cli("status", "--name", name).returncode == 0
    finally:
        down = cli("down", "--name", name, "--purge")
    assert down.returncode == 0, down.stderr
    assert not lab.run_dir(name).exists()
    left = netns.list_netns()
    assert not [ns for ns in left if ns.startswith(f"{name}-")]
    assert not ovs.bridge_exists(lab.bridge_name(name))
    assert lab.read_state(name) is None
    assert naming(lab.run_dir(name)) == []
