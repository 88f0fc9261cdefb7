"""etc/gateway.conf.sample is ``alg.config``'s option table rendered: every option once,
commented out at the default the app really takes, after its help text and its rule."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from alg.config import GROUP, OPTIONS, load, rule, sample
from tests.unit.app_env import OPTIONS as VALID

SAMPLE = Path(__file__).resolve().parents[2] / "etc" / "gateway.conf.sample"
REQUIRED = ("inside_ports", "outside_port", "inside_subnet", "inside_gateway",
            "outside_subnet", "public_ips")
_SETTING = re.compile(r"#(\w+) =(?: (.*))?")


def commented_defaults(text: str) -> dict[str, str]:
    """The ``#name = value`` lines of the sample, by name (each name once)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if (match := _SETTING.fullmatch(line)) is not None:
            assert match[1] not in found, f"{match[1]} twice"
            found[match[1]] = match[2] or ""
    return found


def test_the_sample_is_the_option_table_rendered() -> None:
    assert SAMPLE.read_text() == sample(), (
        "etc/gateway.conf.sample differs from the option table in alg/config.py: run "
        "`.venv/bin/python -m alg.config --sample > etc/gateway.conf.sample`")


def test_every_option_is_there_once_after_its_rule() -> None:
    text = sample()
    assert list(commented_defaults(text)) == [o.name for o in OPTIONS]
    comments = " ".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    for option in OPTIONS:
        if rule(option):
            assert f"Rule: {rule(option)}." in comments, option.name


def test_the_commented_defaults_are_the_app_s_defaults() -> None:
    defaults = commented_defaults(sample())
    required = {name: VALID[name] for name in REQUIRED}
    assert all(defaults[name] == "" for name in REQUIRED)
    assert load({**defaults, **required}) == load(required)


def test_uncommented_it_is_a_config_file_of_one_gateway() -> None:
    text = re.sub(r"(?m)^#(\w+ =)", r"\1", sample())
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert parser.sections() == [GROUP]
    assert list(parser[GROUP]) == [o.name for o in OPTIONS]
