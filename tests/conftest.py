"""Hypothesis profiles for the whole suite, and a real etcd cluster for the tests of
the etcd store, the election key and the warm copy.

``make test`` runs every property test derandomized (the examples follow from each test's
own source), so the same commit always draws the same examples and a run cannot fail by
chance. ``HYPOTHESIS_PROFILE=random`` draws new examples on each run, for the long
exploratory runs (see docs/testing.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from topo.etcd_cluster import Cluster, etcd_binary, etcd_cluster

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("random", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three members of Debian's etcd on loopback, for the tests of one module (skipped,
    saying so, where ``etcd`` is not installed)."""
    if etcd_binary() is None:
        pytest.skip("no etcd binary (Debian's etcd-server)")
    with etcd_cluster(3) as running:
        yield running
