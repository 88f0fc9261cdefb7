"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import installed as installing
from tests.e2e.gateway_lab import GatewayLab, lab_name

#: The framework of the labs of the ``gateway`` fixture: ``PPTP_ALG_FRAMEWORK`` (CI runs
#: one PPTP call under ``os-ken``), else Ryu; ``pptp-alg-gateway`` runs its manager.
FRAMEWORK = os.environ.get("PPTP_ALG_FRAMEWORK", "ryu")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[Any]:
    """Remember each phase's report on the item, so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def gateway(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., GatewayLab]]:
    """A factory: ``gateway(clients, policy="open", public_ips=1, alg=True)`` builds the lab.

    ``bridges=K`` builds K bridges, one gateway each, all driven by the one controller;
    the handle returned is gateway 1's, ``gw.gateway("g2")`` another's.
    ``controllers=N, store="etcd"`` runs N controllers on the lab's etcd cluster.

    The lab has a name of its own (``lab_name``). At the end, everything the test started
    in it is stopped (by PID) and the lab is removed with its folder (``topo.lab.down``),
    whatever happened. When the test failed, the app's counters, calls, flows, the peers'
    logs and the controller log go to stdout, and the controller log to ``tmp_path``.
    """
    from topo import lab, process

    name = lab_name()
    made: list[GatewayLab] = []
    started = False

    def make(clients: int, policy: str = "open", public_ips: int = 1,
             alg: bool = True, options: dict[str, str] | None = None,
             gre_demux: bool = False, bridges: int = 1, controllers: int = 1,
             store: str = "sqlite") -> GatewayLab:
        nonlocal started
        started = True
        state = lab.up(clients, policy, public_ips, alg, name=name, options=options,
                       gre_demux=gre_demux, framework=FRAMEWORK, bridges=bridges,
                       controllers=controllers, store=store)
        runs = ([(c.pid, Path(c.log_path)) for c in state.controllers]
                or [(state.controller_pid, lab.run_dir(name) / lab.LOG_FILE)])
        for pid, log in runs:
            assert pid is not None
            argv = [Path(arg).name for arg in process.cmdline(pid)]
            assert lab.GATEWAY_COMMAND in argv, argv  # what an installation runs
            first = log.read_text().partition("\n")[0]
            assert f" ({FRAMEWORK} " in first, first  # the framework asked for runs
        gw = GatewayLab(state, tmp_path)
        made.append(gw)
        return gw

    try:
        yield make
    finally:
        report = getattr(request.node, "report_call", None)
        failed = report is None or report.failed
        for gw in made:
            if failed:
                print(gw.diagnostics())
            gw.cleanup()
        if started:
            if failed:
                with contextlib.suppress(OSError):
                    shutil.copy(lab.run_dir(name) / lab.LOG_FILE, tmp_path / "ryu.log")
            lab.down(name=name, purge=True)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A factory: ``installed(profile)`` is the ``bin`` folder of a fresh venv with the
    package built from this tree (``tests/e2e/installed.py``), made once per test run and
    shared by its workers."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "installed"

    def make(profile: str) -> Path:
        return installing.venv(folder, profile)

    return make
