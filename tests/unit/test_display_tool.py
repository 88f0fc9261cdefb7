"""``topo.display`` against the real HTTP server of the API with a bearer token.

The server (``ryu_apps.http.serve`` on eventlet) runs in a process of its own on a loopback
socket and answers the counters view and a paged text view, as ``ryu_apps.rest`` does.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from topo import display

REPO = Path(__file__).resolve().parents[2]
TOKEN = "display-token-0123456"
ENV = "PPTP_ALG_REST_TOKEN"
SERVE = """
import sys
from ryu_apps import http

import dataclasses
NEXT = ("Link", '</pptp-alg/display/session-table?offset=2>; rel="next"')

def view(query):
    if query.get("offset"):
        return http.text_response("c\\n")
    return dataclasses.replace(http.text_response("a\\nb\\n"), headers=(NEXT,))

router = http.Router(sys.argv[1])
router.get("/pptp-alg/counters", lambda _q: http.json_response({"alg": {"x": 1}, "app": {}}))
router.get("/pptp-alg/display/session-table", view)
sock = http.listen("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
http.serve(sock, router, 5.0)
"""


@pytest.fixture
def rest() -> Iterator[str]:
    """The API's address, its server in a process of its own requiring :data:`TOKEN`."""
    proc = subprocess.Popen([sys.executable, "-c", SERVE, TOKEN], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_display_tool_sends_the_token_from_its_option_or_the_environment(
        rest: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert display.main(["--rest", rest, "--token", TOKEN, "counters"]) == 0
    assert capsys.readouterr().out.splitlines() == ["alg:", "  x  1", "app:"]
    assert display.main(["--rest", rest, "--token", "wrong", "counters"]) == 1
    assert "401" in capsys.readouterr().err
    assert display.main(["--rest", rest, "counters"]) == 1
    err = capsys.readouterr().err
    assert "401" in err and ENV in err
    monkeypatch.setenv(ENV, TOKEN)
    assert display.main(["--rest", rest, "session-table"]) == 0  # every page carries it
    out = capsys.readouterr()
    assert out.out == "a\nb\nc\n" and TOKEN not in out.err
