"""The package built from this tree and installed into fresh virtual environments, as a
user's ``pip install .`` would, without a resolve per test run.

The wheel is built from a copy of what the package is made of (``PACKAGE_FILES``), once
per run. Its dependencies come from a wheelhouse, ``.venv/wheelhouse/<key>/``, which
``pip wheel`` fills the first time (the one resolve, against the indexes pip is set up
with) and every later run reuses: the key is the hash of ``pyproject.toml``,
``requirements.txt`` and the profiles below. A venv is then ``pip install --no-index``
from the wheelhouse (by this pip: the venv has none). Every step holds a lock, so that
test workers running side by side build each thing once; the venvs of one run are shared
by its workers.

Profiles: ``pinned`` installs the dependencies at the versions of ``requirements.txt``
(os-ken 3.1.1, as ``.venv``); ``os-ken-4`` with os-ken 4.2.2, which has no manager module
(``ryu_apps.command.run_apps``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from topo.lab.state import locked

REPO = Path(__file__).resolve().parents[2]
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "alg", "demux", "ryu_apps")
#: Profile -> what ``pip wheel`` is given besides the package: requirements or constraints.
PROFILES: dict[str, list[str]] = {
    "pinned": ["-c", str(REPO / "requirements.txt")],
    "os-ken-4": ["os-ken==4.2.2", "eventlet==0.41.3"],
}
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def _run(argv: list[str], timeout: float = 600) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def wheelhouse_key() -> str:
    """What the wheelhouse depends on, hashed."""
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "requirements.txt"):
        digest.update((REPO / name).read_bytes())
    digest.update(repr(sorted(PROFILES.items())).encode())
    return digest.hexdigest()[:16]


def build_wheel(folder: Path) -> Path:
    """The package's wheel, built from a copy of ``PACKAGE_FILES`` into ``folder``."""
    with locked(folder / "lock"):
        built = sorted((folder / "dist").glob("pptp_alg_ovs-*.whl"))
        if built:
            return built[0]
        source = folder / "source"
        shutil.rmtree(source, ignore_errors=True)
        for name in PACKAGE_FILES:
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, source / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                source.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / name, source / name)
        _run([*PIP, "wheel", "--no-deps", "-w", str(folder / "dist"), str(source)])
        return next((folder / "dist").glob("pptp_alg_ovs-*.whl"))


def wheelhouse(profile: str, wheel: Path) -> Path:
    """The dependencies' wheels of ``profile``, made once for the key."""
    house = REPO / ".venv" / "wheelhouse" / wheelhouse_key() / profile
    with locked(house.with_name(f"{profile}.lock")):
        done = house / ".complete"
        if not done.exists():
            shutil.rmtree(house, ignore_errors=True)
            _run([*PIP, "wheel", "-w", str(house), str(wheel), *PROFILES[profile]])
            for own in house.glob("pptp_alg_ovs-*.whl"):
                own.unlink()
            done.touch()
    return house


def venv(folder: Path, profile: str) -> Path:
    """A fresh venv under ``folder`` with the package installed from the wheelhouse
    (once per ``folder``); returns its ``bin`` directory."""
    wheel = build_wheel(folder / "wheel")
    house = wheelhouse(profile, wheel)
    target = folder / f"venv-{profile}"
    with locked(folder / f"venv-{profile}.lock"):
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            base = getattr(sys, "_base_executable", sys.executable)
            _run([base, "-m", "venv", "--without-pip", str(target)])
            # This pip installs into the venv (--python): no pip of its own to set up.
            _run([*PIP, "--python", str(target / "bin" / "python"), "install",
                  "--no-compile", "--no-index", "--find-links", str(house), str(wheel)])
            (target / ".complete").touch()
    return target / "bin"
