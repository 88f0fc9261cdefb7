"""ryu_apps.framework: which framework a process runs on, and what it exports."""

from __future__ import annotations

import pytest

from ryu_apps import framework
from ryu_apps.framework import ENV, FrameworkError, choose

BOTH = {"ryu", "os_ken"}.__contains__


def test_the_running_manager_decides() -> None:
    assert choose({}, {"os_ken.base.app_manager"}, BOTH) == "os-ken"
    assert choose({}, {"ryu.base.app_manager"}, BOTH) == "ryu"
    assert choose({ENV: "os-ken"}, {"os_ken.base.app_manager"}, BOTH) == "os-ken"


def test_the_environment_decides_without_a_manager() -> None:
    assert choose({ENV: "os-ken"}, set(), BOTH) == "os-ken"
    assert choose({ENV: "ryu"}, set(), BOTH) == "ryu"
    assert choose({ENV: " "}, set(), BOTH) == "ryu"


def test_otherwise_ryu_first_then_os_ken() -> None:
    assert choose({}, set(), BOTH) == "ryu"
    assert choose({}, set(), {"os_ken"}.__contains__) == "os-ken"


@pytest.mark.parametrize(
    ("environ", "loaded", "installed", "words"),
    [
        ({ENV: "osken"}, set(), BOTH, "expected one of ryu, os-ken"),
        ({ENV: "ryu"}, {"os_ken.base.app_manager"}, BOTH, "this process runs os-ken"),
        ({ENV: "os-ken"}, set(), {"ryu"}.__contains__, "os_ken is not installed"),
        ({}, set(), lambda _p: False, "neither ryu nor os_ken is installed"),
    ],
)
def test_refusals(environ: dict[str, str], loaded: set[str], installed: object,
                  words: str) -> None:
    with pytest.raises(FrameworkError, match=words):
        choose(environ, loaded, installed)  # type: ignore[arg-type]


def test_exports_are_the_chosen_frameworks() -> None:
    package = framework.PACKAGE
    assert framework.App.__module__ == f"{package}.base.app_manager"
    assert framework.App.__name__ == framework.APP_CLASSES[framework.NAME]
    for module in (framework.cfg, framework.hub, framework.ofp_event, framework.ofproto_parser,
                   framework.ofproto_v1_3, framework.ofproto_v1_3_parser):
        assert module.__name__.startswith(f"{package}.")
    assert framework.MAIN_DISPATCHER == "main" and framework.CONFIG_DISPATCHER == "config"
    assert framework.ofproto_v1_3.OFPT_PACKET_IN in framework.ofproto_v1_3_parser._MSG_PARSERS
    assert hasattr(framework.cfg.CONF, "register_opts")
