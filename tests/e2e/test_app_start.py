"""The real app under ``pptp-alg-gateway``, on Ryu's manager and on os-ken's, refuses a
bad configuration, naming the option."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.netns import free_tcp_port
from topo import lab

REPO = Path(__file__).resolve().parents[2]
MANAGERS = lab.MANAGERS
GOOD = {
    "inside_ports": "lab-c1",
    "outside_port": "lab-srv",
    "inside_subnet": "192.168.1.0/24",
    "inside_gateway": "192.168.1.254",
    "outside_subnet": "203.0.113.0/24",
    "public_ips": "203.0.113.2",
    "rest_port": "0",
}


@pytest.fixture(params=sorted(MANAGERS))
def framework(request: pytest.FixtureRequest) -> str:
    """Each test once under each framework's manager (``PPTP_ALG_FRAMEWORK``)."""
    name: str = request.param
    return name


def start(tmp_path: Path, options: dict[str, str], framework: str
          ) -> subprocess.CompletedProcess[str]:
    return start_file(tmp_path, "[nat]\n" + "".join(f"{k} = {v}\n"
                                                    for k, v in options.items()), framework)


def start_file(tmp_path: Path, text: str, framework: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "gateway.conf"
    conf.write_text(text)
    gateway = str(Path(sys.executable).with_name(lab.GATEWAY_COMMAND))
    return subprocess.run(
        [gateway, "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port",
         str(free_tcp_port()), "--config-file", str(conf)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        # this tree, whatever the venv points to; the framework whose manager runs
        env={**os.environ, "PYTHONPATH": str(REPO), "PPTP_ALG_FRAMEWORK": framework},
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
        ({"rest_host": "192.0.2.55", "rest_port": "8080"}, "nat.rest_token"),
        ({"rest_token": "short"}, "nat.rest_token"),
    ],
)
def test_bad_configuration_stops_the_start_naming_the_option(
    tmp_path: Path, changes: dict[str, str], option: str, framework: str
) -> None:
    proc = start(tmp_path, {**GOOD, **changes}, framework)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"configuration error: {option}: " in output, output[-2000:]


def test_missing_option_stops_the_start(tmp_path: Path, framework: str) -> None:
    options = dict(GOOD)
    del options["outside_port"]
    proc = start(tmp_path, options, framework)
    assert proc.returncode != 0
    assert "configuration error: nat.outside_port: missing" in proc.stdout + proc.stderr


def test_a_rest_port_in_use_stops_the_start_naming_the_option(
    tmp_path: Path, framework: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(tmp_path, {**GOOD, "rest_port": str(port)}, framework)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"refusing to start: nat.rest_port: cannot listen on 127.0.0.1:{port}" in output, (
        output[-2000:])


def test_a_rest_host_not_of_this_machine_stops_the_start_naming_the_option(
    tmp_path: Path, framework: str
) -> None:
    proc = start(tmp_path, {**GOOD, "rest_host": "192.0.2.55", "rest_port": "8080",
                            "rest_token": "t" * 20}, framework)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "refusing to start: nat.rest_host: cannot listen on 192.0.2.55:8080" in output, (
        output[-2000:])


@pytest.mark.parametrize(
    ("second", "option"),
    [
        ("bridge = br-one\ninside_ports = two-c1\noutside_port = two-srv\nct_zone = 12\n",
         "gateway:g2.bridge: br-one is gateway g1's bridge too"),
        ("bridge = br-two\ninside_ports = one-c1\noutside_port = two-srv\nct_zone = 12\n",
         "gateway:g2.inside_ports: one-c1 is gateway g1's port too"),
        ("bridge = br-two\ninside_ports = two-c1\noutside_port = two-srv\nct_zone = 11\n",
         "gateway:g2.ct_zone: 11 is gateway g1's zone of the connection tracker too"),
        ("bridge = br-two\ninside_ports = two-c1\noutside_port = two-srv\nct_zone = 12\n"
         "rest_port = 9999\n", "gateway:g2.rest_port: is the process's"),
    ],
)
def test_two_gateways_that_would_share_something_stop_the_start_naming_it(
    tmp_path: Path, second: str, option: str, framework: str
) -> None:
    shared = {k: v for k, v in GOOD.items()
              if k not in ("bridge", "inside_ports", "outside_port")}
    proc = start_file(tmp_path, "[nat]\n" + "".join(f"{k} = {v}\n" for k, v in shared.items())
                      + "[gateway:g1]\nbridge = br-one\ninside_ports = one-c1\n"
                      "outside_port = one-srv\nct_zone = 11\n[gateway:g2]\n" + second,
                      framework)
    assert proc.returncode != 0
    assert f"configuration error: {option}" in proc.stdout + proc.stderr, (
        (proc.stdout + proc.stderr)[-2000:])
