"""The controller as a service (docs/service.md), on real OVS.

``pptp-alg-gateway`` (the unit's command) as the unit runs it, root's user ID without
any capability, with two gateways on two bridges made here and ``NOTIFY_SOCKET`` naming a
datagram socket of the test (a stand-in for systemd): the app says ``READY=1`` only once
both bridges have the pipeline, ``STATUS=`` on each change, ``STOPPING=1`` on SIGTERM,
and sets its zones' limits in the connection tracker. And the app's side of the GRE
demultiplexer (opening the pinned program and table, writing the table) works without
any capability, while loading the program does not.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import FRAMEWORK
from tests.e2e.netns import free_tcp_port, sh
from topo.lab import ovs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for OVS and BPF"),
]

REPO = Path(__file__).resolve().parents[2]
COMMAND = Path(sys.executable).with_name("pptp-alg-gateway")


class Manager:
    """The service manager's end of ``NOTIFY_SOCKET``: a datagram socket in a folder of
    its own (short: a socket's path has at most 107 bytes)."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="sdn-")
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, timeout: float) -> dict[str, str]:
        """The next datagram's ``KEY=VALUE`` lines (waiting up to ``timeout`` s)."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def quiet_for(self, seconds: float) -> bool:
        """True when no datagram comes for ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def manager() -> Iterator[Manager]:
    made = Manager()
    try:
        yield made
    finally:
        made.close()


def make_bridge(bridge: str) -> None:
    """A bridge as docs/service.md's switch: OpenFlow 1.3, fail_mode secure, in-band off,
    an inside and an outside port (internal), no controller yet."""
    ovs.vsctl("--", "add-br", bridge,
              "--", "set", "bridge", bridge, "datapath_type=netdev", "fail_mode=secure",
              "protocols=OpenFlow13", "other-config:disable-in-band=true",
              "--", "add-port", bridge, f"{bridge}i", "--", "set", "interface", f"{bridge}i",
              "type=internal",
              "--", "add-port", bridge, f"{bridge}o", "--", "set", "interface", f"{bridge}o",
              "type=internal")


def connect(bridge: str, port: int) -> None:
    ovs.vsctl("set-controller", bridge, f"tcp:127.0.0.1:{port}",
              "--", "set", "controller", bridge, "connection_mode=out-of-band",
              "max_backoff=1000")


MAX_SESSIONS = 4321
NO_CAPABILITY = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
"""As the unit: ``CapabilityBoundingSet=`` (empty), root's user ID."""


def configuration(bridges: dict[str, str], first_zone: int) -> str:
    """Two gateways with the connection tracker's NAT (the default), a zone each."""
    text = ("[nat]\ninside_subnet = 192.168.1.0/24\ninside_gateway = 192.168.1.254\n"
            "outside_subnet = 203.0.113.0/24\npublic_ips = 203.0.113.2\nrest_port = 0\n"
            f"max_sessions = {MAX_SESSIONS}\n")
    for zone, (name, bridge) in enumerate(bridges.items(), start=first_zone):
        text += (f"[gateway:{name}]\nbridge = {bridge}\ninside_ports = {bridge}i\n"
                 f"outside_port = {bridge}o\nct_zone = {zone}\n")
    return text


def test_ready_comes_once_both_bridges_have_the_pipeline_and_stopping_on_sigterm(
    manager: Manager, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    bridges = {"a": f"sv{tag}a", "b": f"sv{tag}b"}
    zone = 61000 + int(tag, 16) % 4000  # above the labs' zones (topo.lab.state.lab_zone)
    conf = tmp_path / "gateway.conf"
    conf.write_text(configuration(bridges, zone))
    log_path = tmp_path / "controller.log"
    port = free_tcp_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        for bridge in bridges.values():
            make_bridge(bridge)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*NO_CAPABILITY, str(COMMAND), "--ofp-listen-host", "127.0.0.1",
                 "--ofp-tcp-listen-port", str(port), "--config-file", str(conf)],
                cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(REPO), "PPTP_ALG_FRAMEWORK": FRAMEWORK,
                     "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": manager.path})
        a, b = bridges["a"], bridges["b"]
        assert manager.next(60) == {"STATUS": f"0 of 2 gateways ready; waiting for the switch "
                                              f"of a (bridge {a}), b (bridge {b})"}
        assert not ovs.pipeline_installed(a, None)

        connect(a, port)
        message = manager.next(30)
        assert ovs.pipeline_installed(a, None)  # when the message comes, not after
        assert message == {"STATUS": f"1 of 2 gateways ready: a (bridge {a}); waiting for "
                                     f"the switch of b (bridge {b})"}
        assert manager.quiet_for(2.0)  # b has no controller: no READY=1

        connect(b, port)
        message = manager.next(30)
        assert ovs.pipeline_installed(b, None)
        assert message == {"READY": "1",
                           "STATUS": f"2 of 2 gateways ready: a (bridge {a}), b (bridge {b})"}

        for gateway_zone in (zone, zone + 1):
            limits = ovs.appctl("dpctl/ct-get-limits", f"zone={gateway_zone}")
            assert f"zone={gateway_zone},limit={MAX_SESSIONS}," in limits, limits
        log_text = log_path.read_text()
        assert "pipeline installed" in log_text and "cannot be set here" not in log_text

        proc.send_signal(signal.SIGTERM)
        assert manager.next(10) == {"STOPPING": "1", "STATUS": "stopping (SIGTERM)"}
        assert proc.wait(10) == -signal.SIGTERM
    except BaseException:
        print(log_path.read_text(errors="replace")[-4000:] if log_path.exists() else "")
        raise
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for bridge in bridges.values():
            ovs.delete_bridge(bridge)
        for gateway_zone in (zone, zone + 1):
            ovs.forget_zone(gateway_zone)


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


OPEN_AND_WRITE = """
import errno, sys
from ipaddress import IPv4Address as A
from alg.errors import BpfError
from demux.table import Demux
demux = Demux.open(sys.argv[1])
demux.set(A("203.0.113.1"), A("203.0.113.2"), 5, A("192.168.1.1"), 6)
assert demux.entry_counts(A("203.0.113.1"), A("203.0.113.2"), 5) == (0, 0)
assert demux.remove(A("203.0.113.1"), A("203.0.113.2"), 5)
print("opened and written")
try:
    Demux.load()
except BpfError as exc:
    print("load refused", "EPERM" if exc.errno == errno.EPERM else exc.errno)
"""


@pytest.mark.skipif(_kernel() < (5, 19), reason="Linux before 5.19 asks CAP_BPF for any bpf(2)")
def test_the_apps_side_of_the_demultiplexer_needs_no_capability() -> None:
    from demux.table import Demux

    folder = tempfile.mkdtemp(prefix="dmx-")
    mounted = False
    try:
        sh(["mount", "-t", "bpf", "bpf", folder])
        mounted = True
        loaded = Demux.load()
        try:
            loaded.pin(folder)
        finally:
            loaded.close()
        done = subprocess.run(
            ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c",
             OPEN_AND_WRITE, folder],
            cwd=REPO, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stdout.splitlines()
        assert lines[0] == "opened and written", lines
        assert lines[1:] == ["load refused EPERM"]
    finally:
        if mounted:
            for _ in range(50):
                if subprocess.run(["umount", folder], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
        shutil.rmtree(folder, ignore_errors=True)
