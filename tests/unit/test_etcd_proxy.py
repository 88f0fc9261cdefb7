"""The lab's etcd proxy (``topo.etcd_proxy``): it forwards both ways and passes an end of
stream on, a cut closes what it holds and refuses what comes, a restore forwards again;
as a process it answers its signals and writes its state; in front of a real etcd
cluster, a client's requests pass, fail while it is cut and pass again after.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import etcd3gw
import pytest

from topo import etcd_proxy
from topo.etcd_cluster import etcd_binary, etcd_cluster
from topo.etcd_proxy import Proxy, parse_forward

REPO = Path(__file__).resolve().parents[2]


class Echo(socketserver.BaseRequestHandler):
    """Sends back what it reads; closes after the client's end of stream (or a reset,
    which a cut sends)."""

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: int, tmp_path: Path) -> Iterator[Proxy]:
    running = Proxy([(0, ("127.0.0.1", echo))], tmp_path / "proxy.json")
    thread = threading.Thread(target=running.serve, daemon=True)
    thread.start()
    yield running
    running.request(signal.SIGTERM)
    thread.join(5)
    assert not thread.is_alive()


def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    end = time.monotonic() + within
    while not condition():
        assert time.monotonic() < end, "not within the time"
        time.sleep(0.02)


def state(path: Path) -> dict[str, object]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def closed(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (end of stream or reset)."""
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def refused(port: int) -> bool:
    """Whether a connection to ``port`` is closed at once (it may be reset before the
    connect returns)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except (ConnectionResetError, ConnectionRefusedError):
        return True
    with sock:
        return closed(sock)


def test_a_forward_is_port_equals_host_colon_port() -> None:
    assert parse_forward("0=127.0.0.1:2379") == (0, ("127.0.0.1", 2379))
    assert parse_forward("40001=localhost:1") == (40001, ("localhost", 1))
    for bad in ("2379", "x=127.0.0.1:1", "1=127.0.0.1", "1=:5", "70000=h:1", "1=h:0",
                "1=h:70000"):
        with pytest.raises(ValueError):
            parse_forward(bad)


def test_it_forwards_both_ways_and_passes_the_end_of_stream_on(proxy: Proxy) -> None:
    payload = os.urandom(3 << 20)  # more than HIGH_WATER: the reading pauses and resumes
    with socket.create_connection(("127.0.0.1", proxy.ports[0]), timeout=10) as sock:

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        got = bytearray()
        while data := sock.recv(65536):
            got += data
        sender.join()
    assert bytes(got) == payload
    until(lambda: not proxy.pipes)


def test_a_cut_closes_every_connection_and_refuses_new_ones_until_restored(
    proxy: Proxy, tmp_path: Path
) -> None:
    port = proxy.ports[0]
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    for sock in held:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    until(lambda: len(proxy.pipes) == 3)
    proxy.request(etcd_proxy.CUT)
    until(lambda: state(tmp_path / "proxy.json").get("cut") is True)
    assert all(closed(sock) for sock in held)
    assert not proxy.pipes
    assert all(refused(port) for _ in range(3))
    proxy.request(etcd_proxy.FORWARD)
    until(lambda: state(tmp_path / "proxy.json").get("cut") is False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"again")
        assert sock.recv(5) == b"again"
    for sock in held:
        sock.close()


def test_a_member_that_does_not_answer_closes_the_connection_at_once(tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        nobody = int(free.getsockname()[1])
    running = Proxy([(0, ("127.0.0.1", nobody))])
    thread = threading.Thread(target=running.serve, daemon=True)
    thread.start()
    try:
        assert refused(running.ports[0])
    finally:
        running.request(signal.SIGTERM)
        thread.join(5)


def test_a_port_in_use_is_refused_and_nothing_stays_open(echo: int) -> None:
    with pytest.raises(OSError):
        Proxy([(0, ("127.0.0.1", 1)), (echo, ("127.0.0.1", 1))])


def start_process(tmp_path: Path, *forwards: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "topo.etcd_proxy", "--state", str(tmp_path / "p.json")]
    for forward in forwards:
        argv += ["--forward", forward]
    return subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL)


def test_the_process_answers_its_signals_and_records_its_state(
    echo: int, tmp_path: Path
) -> None:
    path = tmp_path / "p.json"
    process = start_process(tmp_path, f"0=127.0.0.1:{echo}", f"0=127.0.0.1:{echo}")
    try:
        until(lambda: bool(state(path)))
        recorded = state(path)
        assert recorded["pid"] == process.pid and recorded["cut"] is False
        forwards = recorded["forwards"]
        assert isinstance(forwards, list) and len(forwards) == 2
        assert [f["target"] for f in forwards] == [f"127.0.0.1:{echo}"] * 2
        ports = [int(f["port"]) for f in forwards]
        assert len(set(ports)) == 2
        held = socket.create_connection(("127.0.0.1", ports[1]), timeout=5)
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        os.kill(process.pid, signal.SIGUSR1)
        until(lambda: state(path).get("cut") is True)
        assert closed(held)
        held.close()
        os.kill(process.pid, signal.SIGUSR2)
        until(lambda: state(path).get("cut") is False)
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=5) as sock:
            sock.sendall(b"y")
            assert sock.recv(1) == b"y"
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(5) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


def test_the_process_refuses_a_bad_forward(tmp_path: Path) -> None:
    process = start_process(tmp_path, "nonsense")
    assert process.wait(10) == 1
    assert not (tmp_path / "p.json").exists()


@pytest.mark.skipif(etcd_binary() is None, reason="no etcd binary (Debian's etcd-server)")
def test_an_etcd_client_through_the_proxy_fails_while_it_is_cut() -> None:
    with etcd_cluster(3) as cluster:
        targets = [url.removeprefix("http://").rpartition(":") for url in cluster.endpoints]
        running = Proxy([(0, (host, int(port))) for host, _, port in targets])
        thread = threading.Thread(target=running.serve, daemon=True)
        thread.start()
        try:
            client = etcd3gw.client(host="127.0.0.1", port=running.ports[1],
                                    api_path="/v3/", timeout=2.0)
            assert client.put("/lab/k", "1")
            assert client.get("/lab/k") == [b"1"]
            running.request(etcd_proxy.CUT)
            until(lambda: running.cut)
            with pytest.raises(Exception):  # noqa: B017 - etcd3gw's or requests' error
                client.get("/lab/k")
            running.request(etcd_proxy.FORWARD)
            until(lambda: not running.cut)
            assert client.get("/lab/k") == [b"1"]
        finally:
            running.request(signal.SIGTERM)
            thread.join(5)
