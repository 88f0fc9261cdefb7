"""The benchmarks still run (a smoke run: small counts, no timing asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import store_cost


def test_store_cost_runs_and_reports_both_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert store_cost.main(["--calls", "30", "--rounds", "1", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| core alone |" in out and "| core + store |" in out
    assert "4.0 transactions and 7.0 records per call setup" in out
    assert list(tmp_path.iterdir()) == []
