"""Hypothesis profiles for the whole suite.

``make test`` runs every property test derandomized (the examples follow from each test's
own source), so the same commit always draws the same examples and a run cannot fail by
chance. ``HYPOTHESIS_PROFILE=random`` draws new examples on each run, for the long
exploratory runs (see docs/testing.md).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("random", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
