"""Setup proof: OVS userspace datapath + ryu-manager + namespaces pass real packets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.netns import free_tcp_port, ns, sh

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

RYU_MANAGER = str(Path(sys.executable).with_name("ryu-manager"))


def test_ryu_controls_ovs_bridge_between_namespaces(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    bridge, ns_a, ns_b = f"brs{tag}", f"sa{tag}", f"sb{tag}"
    port = free_tcp_port()
    log_path = tmp_path / "ryu.log"
    with log_path.open("w") as log:
        ryu = subprocess.Popen(
            [RYU_MANAGER, "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port",
             str(port), "ryu.app.simple_switch_13"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        sh(["ovs-vsctl", "add-br", bridge, "--", "set", "bridge", bridge,
            "datapath_type=netdev", "fail-mode=secure", "protocols=OpenFlow13"])
        for name, addr in ((ns_a, "10.99.0.1/24"), (ns_b, "10.99.0.2/24")):
            sh(["ip", "netns", "add", name])
            sh(["ip", "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0",
                "netns", name])
            sh(["ip", "link", "set", f"v{name}", "up"])
            sh(["ovs-vsctl", "add-port", bridge, f"v{name}"])
            ns(name, "ip", "addr", "add", addr, "dev", "eth0")
            ns(name, "ip", "link", "set", "eth0", "up")
            ns(name, "ethtool", "-K", "eth0", "tx", "off")
        sh(["ovs-vsctl", "set-controller", bridge, f"tcp:127.0.0.1:{port}"])
        deadline = time.monotonic() + 30
        while sh(["ovs-vsctl", "get", "controller", bridge, "is_connected"]).strip() != "true":
            assert time.monotonic() < deadline, "ryu-manager never connected"
            time.sleep(0.2)
        out = ns(ns_a, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.99.0.2", check=False)
        assert " 0% packet loss" in out or " 33% packet loss" in out, out
        flows = sh(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge])
        assert "actions=CONTROLLER" in flows
    finally:
        ryu.terminate()
        ryu.wait(timeout=10)
        sh(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)
        for name in (ns_a, ns_b):
            sh(["ip", "netns", "del", name], check=False)
