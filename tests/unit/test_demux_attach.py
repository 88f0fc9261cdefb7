"""``pptp-alg-demux``'s command line and its command runner (attach and detach themselves
run on real OVS in the e2e tests: the lab attaches the demultiplexer with them)."""

from __future__ import annotations

import pytest

from demux import attach as command


def test_attach_prints_the_two_options(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(command, "attach", lambda *a: calls.append(("attach", *a)))
    assert command.main(["attach", "--bridge", "br0", "--port", "dx", "--dir", "/run/d"]) == 0
    assert calls == [("attach", "br0", "dx", "/run/d")]
    assert capsys.readouterr().out == "[nat] gre_demux_port = dx\n[nat] gre_demux_dir = /run/d\n"


def test_detach_takes_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(command, "detach", lambda *a: calls.append(("detach", *a)))
    assert command.main(["detach", "--bridge", "br0"]) == 0
    assert calls == [("detach", "br0", "pptp-dmx", "/run/pptp-alg-dmx")]


def test_a_failing_command_raises_naming_it_and_its_error() -> None:
    assert command.run(["echo", "out"]) == "out\n"
    assert command.run(["false"], check=False) == ""
    with pytest.raises(command.CommandError, match=r"sh -c echo oops >&2; exit 3 failed "
                                                    r"\(3\): oops") as raised:
        command.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert raised.value.returncode == 3 and raised.value.argv[0] == "sh"


def test_the_peer_end_s_name_fits_an_interface_name() -> None:
    assert command.peer_name("pptp-dmx") == "pptp-dmxp"
    assert command.peer_name("x" * 15) == "x" * 14 + "p"
