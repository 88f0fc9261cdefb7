"""The ``pptp-alg-gateway`` command's own options and what it hands the manager (the
manager itself runs in tests/e2e: test_app_start, test_install, the lab)."""

from __future__ import annotations

import importlib.metadata

import pytest

from ryu_apps import command
from ryu_apps.managers import ENV


def test_help_names_the_command_and_the_manager_options(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert command.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pptp-alg-gateway [--config-file FILE]")
    for option in ("--config-file", "--ofp-tcp-listen-port", "--version", "--manager-help",
                   "--app", "PPTP_ALG_FRAMEWORK"):
        assert option in out


@pytest.mark.parametrize(("framework", "distribution"),
                         [("ryu", "ryu"), ("os-ken", "os-ken")])
def test_version_names_the_gateway_and_the_framework(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        framework: str, distribution: str) -> None:
    # This process may have imported a framework already, which choose() would take.
    monkeypatch.setattr(command, "choose", lambda: framework)
    assert command.main(["--version"]) == 0
    assert capsys.readouterr().out == (
        f"pptp-alg-gateway {importlib.metadata.version('pptp-alg-ovs')} "
        f"({framework} {importlib.metadata.version(distribution)})\n")


def test_an_unknown_framework_stops_the_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(ENV, "pox")
    assert command.main(["--config-file", "x.conf"]) == 2
    assert "pptp-alg-gateway: PPTP_ALG_FRAMEWORK='pox'" in capsys.readouterr().err


def test_the_manager_gets_every_other_argument_and_the_app_last() -> None:
    args, rest = command.parser().parse_known_args(
        ["--config-file", "/etc/pptp-alg/gateway.conf", "--ofp-tcp-listen-port", "6653",
         "--app", "stand_in.py", "ryu.app.ofctl_rest"])
    assert args.app == "stand_in.py"
    plan = command.plan(rest, "os-ken", args.app)
    assert plan == command.Plan("os-ken", "os_ken.cmd.manager", [
        "--config-file", "/etc/pptp-alg/gateway.conf", "--ofp-tcp-listen-port", "6653",
        "ryu.app.ofctl_rest", "stand_in.py"])
    assert command.plan([], "ryu").args == ["ryu_apps.nat_gateway"]


def test_a_release_without_the_manager_module_gets_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "MANAGER_MODULES", {"os-ken": "pptp_alg_absent.cmd.manager"})
    assert command.manager_module("os-ken") is None


def test_a_manager_module_that_fails_to_import_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(name: str) -> object:
        raise ModuleNotFoundError("No module named 'greenlet'", name="greenlet")

    monkeypatch.setattr(command.importlib, "import_module", failing)
    with pytest.raises(ModuleNotFoundError, match="greenlet"):
        command.manager_module("ryu")
