"""The bench still runs end to end (a smoke run: small counts; what it measures is not
checked here, only that every peer answered every call)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.__main__ import main

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]


def test_the_bench_runs_every_peer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--new", "20", "--existing", "40", "--tcp", "40", "--rounds", "1",
                 "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "latest.json").read_text())
    peers = {(r["mode"], r["peer"]) for r in results}
    every = ("no NAT", "linux", "plain OVS", "bare Ryu", "gateway")
    assert peers == {(m, p) for m in ("new", "tcp") for p in every} | {
        ("existing", p) for p in every if p != "linux"}
    assert all(r["failed"] == 0 and r["median_us"] > 0 for r in results), results
    assert "| new connections | gateway |" in table and "connections/s" in table
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "latest.md").read_text().strip().endswith(table.strip().splitlines()[-1])
