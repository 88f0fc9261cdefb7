"""The systemd unit and the Containerfile (``packaging/``), checked as text.

No image registry is reachable where the tests run, so the Containerfile is never built
here: it is parsed, and held to what the app needs (the package installed with pip, the
console script as entrypoint, the ports, the volumes) and to what ``hadolint`` would
catch cheaply (run too when it is installed). The unit is held to its required keys, and
verified by ``systemd-analyze verify`` when it is installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from ryu_apps import nat_gateway, switch
from ryu_apps.managers import COMMAND

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "pptp-alg-gateway.service"
CONTAINERFILE = REPO / "packaging" / "Containerfile"
CONFIG = "/etc/pptp-alg/gateway.conf"
STATE = "/var/lib/pptp-alg"


# The unit.

def unit() -> dict[str, list[tuple[str, str]]]:
    """The unit's sections: name -> (key, value) in order (a key may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{line!r} is not KEY=VALUE"
        current.append((key.strip(), value.strip()))
    return sections


def service(key: str) -> str:
    """The last value of ``key`` in [Service] (systemd's rule for a single-valued key)."""
    values = [v for k, v in unit()["Service"] if k == key]
    assert values, f"[Service] has no {key}="
    return values[-1]


def test_the_unit_has_its_sections() -> None:
    assert set(unit()) == {"Unit", "Service", "Install"}
    assert ("WantedBy", "multi-user.target") in unit()["Install"]


def test_the_unit_runs_the_console_script_with_the_config_file() -> None:
    argv = shlex.split(service("ExecStart"))
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == COMMAND
    assert argv[1:] == ["--config-file", CONFIG]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert COMMAND in scripts


def test_the_unit_waits_for_the_apps_readiness() -> None:
    assert service("Type") == "notify"
    assert service("NotifyAccess") == "main"  # the command runs the manager in its process
    assert service("TimeoutStartSec") == "infinity"


def test_the_unit_restarts_on_failure_but_not_after_a_refused_configuration() -> None:
    assert service("Restart") == "on-failure"
    assert service("RestartPreventExitStatus") == "2"
    assert nat_gateway._refuse("a bad option").code == 2


def test_the_state_directory_and_the_journal() -> None:
    assert service("StateDirectory") == Path(STATE).name
    assert f"state_file = {STATE}/" in UNIT.read_text()
    assert service("StandardOutput") == service("StandardError") == "journal"


def test_the_unit_grants_no_capability_and_says_which_ports() -> None:
    assert service("User") == "root"
    assert service("CapabilityBoundingSet") == ""
    assert service("AmbientCapabilities") == ""
    assert service("NoNewPrivileges") == "yes"
    text = UNIT.read_text()
    assert f"OpenFlow {switch.OPENFLOW_PORT}" in text and f"HTTP {switch.REST_PORT}" in text
    assert switch.OPENFLOW_PORT > 1023 and switch.REST_PORT > 1023


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # The unit's program as installed here (systemd checks that it can be run).
    program = shlex.split(service("ExecStart"))[0]
    here = Path(sys.executable).with_name(COMMAND)
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(program, str(here) if here.exists()
                                             else "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", "--generators=no",
                           str(copy)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


# The Containerfile.

@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword, its arguments (continuations joined) and the rules a
    ``# hadolint ignore=`` line just before it ignores."""

    keyword: str
    args: str
    ignored: frozenset[str]


def instructions() -> list[Instruction]:
    found: list[Instruction] = []
    ignored: frozenset[str] = frozenset()
    pending = ""
    for line in CONTAINERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            rule = re.match(r"#\s*hadolint\s+ignore=(\S+)", stripped)
            ignored = frozenset(rule.group(1).split(",")) if rule else frozenset()
            continue
        if stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\")
        if stripped.endswith("\\"):
            continue
        keyword, _, args = pending.strip().partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(args.split()), ignored))
        pending, ignored = "", frozenset()
    assert not pending, "the file ends inside a continued line"
    return found


def only(keyword: str) -> Instruction:
    [found] = [i for i in instructions() if i.keyword == keyword]
    return found


def runs() -> list[str]:
    return [i.args for i in instructions() if i.keyword == "RUN"]


def exec_form(keyword: str) -> list[str]:
    """An ENTRYPOINT's or CMD's JSON array (DL3025: not the shell form)."""
    value = json.loads(only(keyword).args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def test_the_image_is_debian_12_by_its_tag() -> None:
    assert instructions()[0].keyword == "FROM"
    image = only("FROM").args
    name, _, tag = image.rpartition(":")
    assert name.endswith("/debian") and tag.startswith("12") and tag != "latest"  # DL3006/7


def test_apt_installs_in_one_layer_without_recommends_and_cleans_up() -> None:
    [apt] = [r for r in runs() if "apt-get" in r]
    assert re.search(r"apt-get update && apt-get install -y --no-install-recommends ", apt)
    assert apt.endswith("&& rm -rf /var/lib/apt/lists/*")  # DL3009
    packages = apt.split("--no-install-recommends ")[1].split(" &&")[0].split()
    # python3 -m venv; ovs-appctl and ovs-vsctl (ryu_apps.ctlimits); tini as PID 1.
    assert set(packages) == {"python3", "python3-venv", "openvswitch-common",
                             "openvswitch-switch", "tini"}
    [install] = [i for i in instructions() if i.args == apt]
    assert install.ignored == {"DL3008"}  # Debian's versions are not pinned, on purpose


def test_the_package_is_installed_with_pip_from_the_files_copied() -> None:
    [pip] = [r for r in runs() if "pip install" in r]
    venv = re.search(r"python3 -m venv (\S+)", pip)
    assert venv is not None
    steps = re.search(rf"{re.escape(venv.group(1))}/bin/pip install --no-cache-dir (\S+)", pip)
    assert steps is not None, pip  # DL3042; a directory, not an unpinned name (DL3013)
    source = steps.group(1)
    copies = [i.args.split() for i in instructions() if i.keyword == "COPY"]
    copied = {src: dst for *srcs, dst in copies for src in srcs}
    for src in copied:
        assert (REPO / src).exists(), src
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = [project["project"]["readme"], "pyproject.toml",
              *project["project"]["license-files"], *project["tool"]["setuptools"]["packages"]]
    for path in needed:
        assert copied.get(path, "").rstrip("/") in (source, f"{source}/{path}"), path
    assert pip.endswith(f"&& rm -rf {source}")


def test_the_entrypoint_is_the_console_script_with_the_config_file() -> None:
    [pip] = [r for r in runs() if "python3 -m venv" in r]
    venv = pip.split("python3 -m venv ")[1].split()[0]
    assert exec_form("ENTRYPOINT") == ["/usr/bin/tini", "--", f"{venv}/bin/{COMMAND}"]
    assert exec_form("CMD") == ["--config-file", CONFIG]
    assert shlex.split(service("ExecStart"))[1:] == exec_form("CMD")  # as the unit


def test_the_ports_and_the_volumes() -> None:
    ports = only("EXPOSE").args.split()
    assert ports == [f"{switch.OPENFLOW_PORT}/tcp", f"{switch.REST_PORT}/tcp"]
    assert all(0 < int(p.split("/")[0]) < 65536 for p in ports)  # DL3011
    assert json.loads(only("VOLUME").args) == [str(Path(CONFIG).parent), STATE]


def test_what_hadolint_would_catch_cheaply() -> None:
    keywords = [i.keyword for i in instructions()]
    assert "ADD" not in keywords  # DL3020
    assert "MAINTAINER" not in keywords  # DL4000
    assert keywords.count("ENTRYPOINT") == keywords.count("CMD") == 1  # DL4003, DL4004
    assert all(i.args.startswith("/") for i in instructions() if i.keyword == "WORKDIR")
    assert all(i.args != "root" for i in instructions() if i.keyword == "USER")  # DL3002
    for run in runs():
        words = run.split()
        assert "sudo" not in words  # DL3004
        assert "cd" not in words  # DL3003
        assert "apt" not in words  # DL3027
        assert not re.search(r"(?<!\|)\|(?!\|)", run)  # DL4006: no pipe without pipefail


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
def test_hadolint_passes() -> None:
    done = subprocess.run(["hadolint", str(CONTAINERFILE)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
