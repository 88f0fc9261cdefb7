"""The real app under ryu-manager refuses a bad configuration, naming the option."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.netns import free_tcp_port

REPO = Path(__file__).resolve().parents[2]
RYU_MANAGER = str(Path(sys.executable).with_name("ryu-manager"))
GOOD = {
    "inside_ports": "lab-c1",
    "outside_port": "lab-srv",
    "inside_subnet": "192.168.1.0/24",
    "inside_gateway": "192.168.1.254",
    "outside_subnet": "203.0.113.0/24",
    "public_ips": "203.0.113.2",
    "rest_port": "0",
}


def start(tmp_path: Path, options: dict[str, str]) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "gateway.conf"
    conf.write_text("[nat]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
    return subprocess.run(
        [RYU_MANAGER, "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port",
         str(free_tcp_port()), "--config-file", str(conf), "ryu_apps/nat_gateway.py"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # this tree, whatever the venv points to
    )


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"public_ips": ""}, "nat.public_ips"),
        ({"public_ips": "203.0.113.300"}, "nat.public_ips"),
        ({"inside_gateway": "10.0.0.1"}, "nat.inside_gateway"),
        ({"policy": "lenient"}, "nat.policy"),
        ({"gre_idle": "0"}, "nat.gre_idle"),
        ({"rest_port": "70000"}, "nat.rest_port"),
        ({"rest_host": "localhost:80"}, "nat.rest_host"),
    ],
)
def test_bad_configuration_stops_the_start_naming_the_option(
    tmp_path: Path, changes: dict[str, str], option: str
) -> None:
    proc = start(tmp_path, {**GOOD, **changes})
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"configuration error: {option}: " in output, output[-2000:]


def test_missing_option_stops_the_start(tmp_path: Path) -> None:
    options = dict(GOOD)
    del options["outside_port"]
    proc = start(tmp_path, options)
    assert proc.returncode != 0
    assert "configuration error: nat.outside_port: missing" in proc.stdout + proc.stderr


def test_a_rest_port_in_use_stops_the_start_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(tmp_path, {**GOOD, "rest_port": str(port)})
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"refusing to start: nat.rest_port: cannot listen on 127.0.0.1:{port}" in output, (
        output[-2000:])
