"""docs/own-bridge.md, followed as it is written: its shell commands and its configuration,
read from the page's code blocks with the example names, ports and folders replaced by
the test's own, on a bridge the test makes (not ``topo.lab``), with the console script
of the package installed into a fresh venv (``installed``: os-ken 3.1.1 as pinned, and
os-ken 4.2.2), and a real PPTP call (pptpd and pptp-linux with the pppd stand-in, in
namespaces of the test's) through it.

Everything the test makes (namespaces, veths, the bridge, the demultiplexer, the zone's
settings, the processes) it removes at the end, whatever happens, by name or PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.netns import free_tcp_port
from topo import process
from topo.lab import ovs
from topo.netns import address, netns_group, ns_run, route, tx_off, veth
from topo.peers import start_pptp_client, start_pptpd, stop_all, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

PAGE = Path(__file__).resolve().parents[2] / "docs" / "own-bridge.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SERVER_IP = "203.0.113.1"
CLIENT_IP = "192.168.1.1"


def blocks() -> list[tuple[str, str]]:
    """The page's code blocks, in order: (language, text)."""
    return [(m[1], m[2]) for m in _BLOCK.finditer(PAGE.read_text())]


def substitute(text: str, names: dict[str, str]) -> str:
    """``text`` with each example name (a whole word) replaced by the test's."""
    for example, own in names.items():
        text = re.sub(rf"(?<![\w./-]){re.escape(example)}(?![\w-])", own, text)
    return text


def commands(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def sh(command: str) -> str:
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{command}: {proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("profile", ["pinned", "os-ken-4"])
def test_the_page_s_steps_pass_a_pptp_call(installed: Callable[[str], Path],
                                          tmp_path: Path, profile: str) -> None:
    tag = uuid.uuid4().hex[:5]
    zone = 61000 + zlib.crc32(tag.encode()) % 4000  # past the labs' zones (1,000..60,999)
    bin_dir = installed(profile)
    names = {
        "/opt/pptp-alg/bin": str(bin_dir),
        "/etc/pptp-alg": str(tmp_path / "etc"),
        "/var/lib/pptp-alg": str(tmp_path / "lib"),
        "/run/pptp-alg-dmx": str(tmp_path / "bpf"),
        "br-pptp": f"br-ob{tag}",
        "pptp-in1": f"ob{tag}-in",
        "pptp-up": f"ob{tag}-up",
        "pptp-dmx": f"ob{tag}-dx",
        "6653": str(free_tcp_port()),
        "8723": str(free_tcp_port()),
        "ct_zone = 1": f"ct_zone = {zone}",
    }
    install, *rest = blocks()
    assert install == ("sh", "python3 -m venv /opt/pptp-alg\n"
                             "/opt/pptp-alg/bin/pip install .\n")  # as `installed` does
    steps = [(lang, substitute(text, names)) for lang, text in rest]
    bridge, folders, config, demux, run, views, undo = steps
    assert config[0] == "ini" and all(lang == "sh" for lang, _ in steps if lang != "ini")
    bridge_name = names["br-pptp"]
    client_ns, server_ns = f"ob{tag}-c1", f"ob{tag}-srv"
    gateway: subprocess.Popen[str] | None = None
    peers: list = []
    with netns_group() as group, open(tmp_path / "gateway.log", "w+") as log:
        try:
            group.add(client_ns)
            group.add(server_ns)
            for ns, port, ip, via in ((client_ns, names["pptp-in1"], CLIENT_IP, "192.168.1.254"),
                                      (server_ns, names["pptp-up"], SERVER_IP, None)):
                veth(ns, "eth0", None, port)
                tx_off(ns, "eth0")
                address(ns, "eth0", f"{ip}/24")
                ns_run(ns, "ip", "link", "set", "lo", "up")
                if via is not None:
                    route(ns, "default", via)
            for step in (bridge, folders, demux):
                for command in commands(step[1]):
                    sh(command)
            (tmp_path / "etc" / "gateway.conf").write_text(config[1])
            [start] = commands(run[1])
            gateway = subprocess.Popen(shlex.split(start), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, text=True,
                                       start_new_session=True)

            def ready() -> bool:
                assert gateway is not None and gateway.poll() is None, log_text(log)
                out = subprocess.run(commands(views[1])[0], shell=True, capture_output=True,
                                     text=True, timeout=10).stdout
                return bool(out) and all(g["ready"] for g in json.loads(out)["gateways"])

            wait_for(ready, 30, what="the gateway ready on its bridge")
            server = start_pptpd(server_ns, SERVER_IP, tmp_path / "srv")
            peers.append(server)
            client = start_pptp_client(client_ns, SERVER_IP, tmp_path / "c1", tag="c1")
            peers.append(client)
            wait_for(lambda: (len(server.standins()) == 1
                              and server.standins()[0]["received"] >= 3
                              and sum(client.received_tags().values()) >= 3),
                     25, what="PPP frames both ways through the gateway")

            gateways, table, server_map, metrics = (sh(c) for c in commands(views[1]))
            [one] = json.loads(gateways)["gateways"]
            assert (one["name"], one["bridge"], one["connected"], one["ready"]) == (
                "default", bridge_name, True, True), one
            assert f"pptp  VPN:public --> public {CLIENT_IP}:" in table, table
            assert "[203.0.113.2:" in table and f"+-> {SERVER_IP}:1723" in table, table
            assert server_map.count("Type: ASPF") == 2, server_map
            assert 'pptp_alg_calls_in_progress{gateway="default"} 1.0' in metrics, metrics
            assert 'pptp_alg_gre_demux_up{gateway="default"} 1.0' in metrics, metrics
        finally:
            stop_all(peers)
            if gateway is not None:
                process.terminate(gateway.pid, 5, 5, popen=gateway)
            for command in commands(undo[1]):
                subprocess.run(command, shell=True, capture_output=True, timeout=60)
            with contextlib.suppress(Exception):
                ovs.delete_bridge(bridge_name)
            ovs.forget_zone(zone)
            for port in (names["pptp-in1"], names["pptp-up"]):
                subprocess.run(["ip", "link", "del", port], capture_output=True, timeout=30)


def log_text(log: object) -> str:
    """What the gateway wrote so far."""
    assert hasattr(log, "seek") and hasattr(log, "read")
    log.seek(0)
    return str(log.read())[-3000:]
