"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gateway_lab import GatewayLab


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

    At the end, everything the test started in it is stopped (by PID) and the lab is
    removed (``topo.lab.down``), whatever happened. When the test failed, the app's
    counters, calls, flows, the peers' logs and the controller log go to stdout.
    """
    from topo import lab

    made: list[GatewayLab] = []
    started = False

    def make(clients: int, policy: str = "open", public_ips: int = 1,
             alg: bool = True) -> GatewayLab:
        nonlocal started
        started = True
        state = lab.up(clients, policy, public_ips, alg)
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
                    shutil.copy(lab.LOG_PATH, tmp_path / "ryu.log")
            lab.down()
