"""``pip install`` of the package built from this tree, into fresh venvs: the commands
exist, answer ``--help`` and ``--version``, and start the app under the framework's
manager (os-ken 3.1.1 as pinned, and os-ken 4.2.2, which has no manager module), which
refuses a bad configuration naming the option."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.netns import free_tcp_port

pytestmark = pytest.mark.e2e

VERSIONS = {"pinned": "os-ken 3.1.1", "os-ken-4": "os-ken 4.2.2"}


def run(bin_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True,
                          text=True, timeout=60, cwd=bin_dir)


@pytest.mark.parametrize("profile", sorted(VERSIONS))
def test_the_installed_commands_answer_help_and_version(
        installed: Callable[[str], Path], profile: str) -> None:
    bin_dir = installed(profile)
    version = run(bin_dir, "pptp-alg-gateway", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"pptp-alg-gateway 0.1.0 ({VERSIONS[profile]})\n"
    usage = run(bin_dir, "pptp-alg-gateway", "--help")
    assert usage.returncode == 0 and "--config-file FILE" in usage.stdout, usage.stderr
    demux = run(bin_dir, "pptp-alg-demux", "--help")
    assert demux.returncode == 0 and "{attach,detach}" in demux.stdout, demux.stderr


@pytest.mark.parametrize("profile", sorted(VERSIONS))
def test_the_installed_app_refuses_a_bad_configuration(
        installed: Callable[[str], Path], profile: str, tmp_path: Path) -> None:
    bin_dir = installed(profile)
    conf = tmp_path / "gateway.conf"
    conf.write_text("[nat]\ninside_ports = in1\noutside_port = out\n"
                    "inside_subnet = 192.168.1.0/24\ninside_gateway = 192.168.1.254\n"
                    "outside_subnet = 203.0.113.0/24\npublic_ips =\nrest_port = 0\n")
    proc = run(bin_dir, "pptp-alg-gateway", "--config-file", str(conf), "--ofp-listen-host",
               "127.0.0.1", "--ofp-tcp-listen-port", str(free_tcp_port()))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"pptp-alg-gateway 0.1.0 ({VERSIONS[profile]}): ")
    assert "configuration error: nat.public_ips: missing" in proc.stderr, proc.stderr[-2000:]


def test_the_package_is_the_gateway_alone(installed: Callable[[str], Path]) -> None:
    python = installed("pinned") / "python"
    probe = ("import importlib.util as u; print(*(u.find_spec(m) is not None for m in "
             "('alg', 'demux', 'ryu_apps', 'os_ken', 'topo', 'tests', 'ryu')))")
    proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                          timeout=60, cwd=python.parent)
    assert proc.stdout.split() == ["True"] * 4 + ["False"] * 3, proc.stderr
