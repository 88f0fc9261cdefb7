"""docs/options.md is ``alg.config``'s option table rendered, and the rules it states are
the ones the checks apply."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alg.config import OPTIONS, Option, load, markdown, rule
from alg.errors import ConfigError
from tests.unit.app_env import OPTIONS as VALID

PAGE = Path(__file__).resolve().parents[2] / "docs" / "options.md"


def test_the_options_page_is_the_option_table_rendered() -> None:
    assert PAGE.read_text() == markdown(), (
        "docs/options.md differs from the option table in alg/config.py: run "
        "`.venv/bin/python -m alg.config --markdown > docs/options.md`")


def test_every_option_but_free_text_states_its_rule() -> None:
    assert [o.name for o in OPTIONS if not rule(o)] == ["bridge", "state_file"]


def bounds(option: Option) -> tuple[list[float], list[float]] | None:
    """Values the option's stated rule takes and values it refuses, at its bounds."""
    text = rule(option)
    tiny = 0.001 if option.kind == "float" else 1
    if text == "positive":
        return [tiny], [0]
    if (match := re.fullmatch(r"at least (\d+)", text)) is not None:
        low = int(match[1])
        return [low], [low - 1]
    if (match := re.fullmatch(r"(\d+)\.\.(\d+)", text)) is not None:
        low, high = int(match[1]), int(match[2])
        return [low, high], [low - 1, high + 1]
    return None


BOUNDED = [o for o in OPTIONS if bounds(o) is not None]


def test_the_numeric_rules_cover_the_bounded_options() -> None:
    assert {"mtu", "max_buffer", "rest_port", "gre_idle", "max_calls", "stats_interval"} <= {
        o.name for o in BOUNDED}


@pytest.mark.parametrize("option", BOUNDED, ids=lambda o: o.name)
def test_a_stated_bound_is_the_checked_one(option: Option) -> None:
    found = bounds(option)
    assert found is not None
    taken, refused = found
    for value in taken:
        load({**VALID, option.name: value})
    for value in refused:
        with pytest.raises(ConfigError, match=f"nat.{option.name}"):
            load({**VALID, option.name: value})
