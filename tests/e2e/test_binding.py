"""The gateway binds to its own bridge: another bridge pointed at the same controller
gets nothing installed and takes nothing over (``ryu_apps.binding``)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest

from tests.e2e.gateway_lab import PUBLIC_IP, SERVER_IP, GatewayLab, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
PORT = 8000


def vsctl(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", "--timeout=10", *args], capture_output=True,
                          text=True, timeout=20, check=True).stdout


def test_a_second_bridge_pointed_at_the_controller_gets_nothing(gateway: Factory) -> None:
    gw = gateway(1)
    other = f"br-{gw.state.name}x"
    try:
        vsctl("add-br", other, "--", "set", "bridge", other, "datapath_type=netdev",
              "fail_mode=secure", "protocols=OpenFlow13",
              "other-config:disable-in-band=true", "--", "set-controller", other,
              gw.state.controller)
        wait_for(lambda: gw.rest("/pptp-alg/gateways")["switches_refused"] >= 1, 10,
                 "the second bridge refused")
        flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", other],
                               capture_output=True, text=True, timeout=20, check=True).stdout
        assert [line for line in flows.splitlines() if "actions=" in line] == []
        # The lab's own bridge still carries its hosts' traffic.
        gw.tool(gw.server, "serve", "--port", str(PORT), "--log",
                str(gw.run_dir / "serve.log"))
        wait_for(lambda: (gw.run_dir / "serve.log").exists(), 5, "the listener in srv")
        proc = gw.tool(gw.client(1), "napt-client", SERVER_IP, str(PORT), "--tag", "b",
                       text=True)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (out, err)
        result = json.loads(out.splitlines()[0])
        assert result["tcp"]["data"] == "tcp-b"
        assert result["tcp"]["peer"].rsplit(":", 1)[0] == PUBLIC_IP
        assert gw.rest("/pptp-alg/gateways")["switches_refused"] == 1
    finally:
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", other],
                       capture_output=True, timeout=20, check=False)
