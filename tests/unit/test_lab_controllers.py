"""The lab's several controllers on etcd (``topo.lab.standbys`` and what it adds to the
plan, the state file, the configuration files, OVS and the command line), and
``topo.watch``.

Without OVS and without the app: the controllers are stand-in processes whose command
line names ``pptp-alg-gateway`` and their configuration file, their REST answers and
the switch's view are replaced where a test needs them. The lab's etcd cluster starts
and stops for real (where Debian's ``etcd`` is installed), in a temporary folder;
``tests/e2e/test_lab_controllers.py`` runs the whole lab.
"""

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alg.config import load, load_gateways
from alg.errors import ConfigError
from topo import etcd_cluster, lab, netns, watch
from topo.lab import health, names, netns_backend, ovs, standbys
from topo.lab.state import CONTROLLER_OPTIONS

REPO = Path(__file__).resolve().parents[2]


def on_etcd(name: str = "t7", controllers: int = 2, bridges: int = 1, **kw: Any
            ) -> lab.LabState:
    """A lab on etcd as planned, with its ports given (as ``up`` picks them)."""
    state = lab.plan(1, name=name, controllers=controllers, store="etcd", bridges=bridges,
                     **kw)
    state.use_etcd_ports(list(range(41001, 41001 + state.etcd_port_count())))
    return state


def sections(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return {section: dict(parser[section]) for section in parser.sections()}


# ---------------------------------------------------------------- plan, state, files


def test_a_lab_on_etcd_plans_its_controllers_and_members_in_its_folder() -> None:
    state = lab.plan(2, name="t7", controllers=3, store="etcd")
    assert state.store == "etcd"
    assert [c.controller_id for c in state.controllers] == ["c1", "c2", "c3"]
    assert [m.name for m in state.etcd] == ["m1", "m2", "m3"]
    c2, m3 = state.controller_at(2), state.etcd[2]
    folder = Path(state.run_dir)
    assert (c2.config_path, c2.log_path, c2.pid_path, c2.exit_path) == (
        str(folder / "gateway-c2.conf"), str(folder / "ryu-c2.log"),
        str(folder / "ryu-c2.pid"), str(folder / "ryu-c2.exit"))
    assert (c2.proxy_state_path, c2.proxy_log_path, c2.proxy_pid_path) == (
        str(folder / "etcd-proxy-c2.json"), str(folder / "etcd-proxy-c2.log"),
        str(folder / "etcd-proxy-c2.pid"))
    assert (m3.data_dir, m3.log_path, m3.pid_path) == (
        str(folder / "etcd" / "m3.etcd"), str(folder / "etcd" / "m3.log"),
        str(folder / "etcd" / "m3.pid"))
    # Every port is picked at `up`, the default lab's too.
    assert (state.openflow_port, state.rest_port, state.controller, state.rest_url) == (
        0, 0, "", "")
    default = lab.plan(1, controllers=2, store="etcd")
    assert (default.openflow_port, default.rest_port) == (0, 0)
    assert default.controller_pid is None
    with pytest.raises(ValueError, match=r"controllers 1 \.\. 3, not 4"):
        state.controller_at(4)
    with pytest.raises(ValueError, match="has one controller, with store sqlite"):
        lab.plan(1, name="t7").controller_at(1)


@pytest.mark.parametrize(("controllers", "store", "match"), [
    (2, "sqlite", "2 controllers need store etcd"),
    (0, "etcd", r"controllers must be 1 \.\. 9"),
    (10, "etcd", r"controllers must be 1 \.\. 9"),
    (True, "etcd", r"controllers must be 1 \.\. 9"),
    (1, "redis", "store must be one of sqlite, etcd"),
])
def test_plan_refuses_controllers_without_etcd_and_out_of_range(
    controllers: int, store: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        lab.plan(1, name="t7", controllers=controllers, store=store)


def test_one_controller_on_etcd_is_a_lab_on_etcd() -> None:
    state = lab.plan(1, name="t7", store="etcd")
    assert len(state.controllers) == 1 and len(state.etcd) == 3


def test_the_ports_go_to_members_then_controllers_and_proxies_in_order() -> None:
    state = lab.plan(1, name="t7", controllers=2, store="etcd")
    assert state.etcd_port_count() == 2 * 3 + 2 * (2 + 3)
    ports = list(range(41001, 41017))
    state.use_etcd_ports(ports)
    assert [(m.client_port, m.peer_port) for m in state.etcd] == [
        (41001, 41002), (41003, 41004), (41005, 41006)]
    assert state.etcd[0].client_url == "http://127.0.0.1:41001"
    c1, c2 = state.controllers
    assert (c1.openflow_port, c1.rest_port, c1.proxy_ports) == (41007, 41008,
                                                                 [41009, 41010, 41011])
    assert (c2.openflow_port, c2.rest_port, c2.proxy_ports) == (41012, 41013,
                                                                 [41014, 41015, 41016])
    assert c2.target == "tcp:127.0.0.1:41012" and c2.rest_url == "http://127.0.0.1:41013"
    assert c1.etcd_endpoints == ["http://127.0.0.1:41009", "http://127.0.0.1:41010",
                                 "http://127.0.0.1:41011"]
    assert (state.openflow_port, state.rest_port) == (41007, 41008)
    assert state.rest_url == "http://127.0.0.1:41008"
    assert state.controller == "tcp:127.0.0.1:41007 tcp:127.0.0.1:41012"
    assert state.tcp_ports() == set(ports)
    with pytest.raises(ValueError, match="needs 16 ports, not 15"):
        state.use_etcd_ports(ports[:-1])
    assert lab.plan(1, name="t7").tcp_ports() == {0}


def test_each_controller_s_file_is_its_own_and_the_app_loads_it() -> None:
    state = on_etcd(policy="strict")
    texts = [lab.render_config(state, controller=one) for one in state.controllers]
    assert lab.render_config(state) == texts[0]
    for one, text in zip(state.controllers, texts, strict=True):
        found = sections(text)
        assert list(found) == ["nat"]
        nat = found["nat"]
        assert "state_file" not in nat
        assert (nat["rest_port"], nat["store"], nat["etcd_cluster"], nat["controller_id"]) == (
            str(one.rest_port), "etcd", "t7", one.controller_id)
        assert nat["etcd_endpoints"] == ",".join(one.etcd_endpoints)
        config = load(nat)
        assert config.store == "etcd" and config.controller_id == one.controller_id
        assert config.etcd_endpoints == tuple(one.etcd_endpoints)
        assert config.state_file == "" and config.alg.policy == "strict"
    first, second = (sections(text)["nat"] for text in texts)
    assert {k for k in first if first[k] != second[k]} == {
        "rest_port", "etcd_endpoints", "controller_id"}


def test_with_several_bridges_the_process_s_options_are_in_nat_and_no_gateway_has_a_file(
) -> None:
    state = on_etcd(bridges=2, gre_demux=True)
    found = sections(lab.render_config(state, controller=state.controller_at(2)))
    assert list(found) == ["nat", "gateway:g1", "gateway:g2"]
    assert found["nat"]["controller_id"] == "c2" and found["nat"]["store"] == "etcd"
    assert all("state_file" not in found[f"gateway:g{j}"] for j in (1, 2))
    loaded = load_gateways(found["nat"], {"g1": found["gateway:g1"],
                                          "g2": found["gateway:g2"]})
    assert all(c.store == "etcd" and c.controller_id == "c2" for c in loaded.values())


@pytest.mark.parametrize("key", CONTROLLER_OPTIONS)
def test_options_the_lab_sets_per_controller_are_refused_on_etcd(key: str) -> None:
    with pytest.raises(ConfigError, match="each controller of a lab on etcd") as info:
        lab.plan(1, name="t7", store="etcd", options={key: "1"})
    assert info.value.key == f"nat.{key}"


def test_a_state_on_etcd_round_trips_and_one_on_sqlite_writes_today_s_keys() -> None:
    state = on_etcd(bridges=2)
    state.controllers[0].pid, state.controllers[0].proxy_pid = 5001, 5002
    state.etcd[1].pid = 5003
    state.phase = "up"
    data = json.loads(json.dumps(state.to_dict()))
    assert data["store"] == "etcd" and len(data["controllers"]) == 2 and len(data["etcd"]) == 3
    assert lab.LabState.from_dict(data) == state
    sqlite = lab.plan(2, name="t7").to_dict()
    assert not {"store", "controllers", "etcd"} & set(sqlite)
    assert lab.LabState.from_dict(sqlite).store == "sqlite"


def test_controller_files_are_named_by_index() -> None:
    assert names.controller_files(3) == {
        "config": "gateway-c3.conf", "log": "ryu-c3.log", "pid": "ryu-c3.pid",
        "exit": "ryu-c3.exit", "proxy_state": "etcd-proxy-c3.json",
        "proxy_log": "etcd-proxy-c3.log", "proxy_pid": "etcd-proxy-c3.pid"}
    for bad in (0, 10, True):
        with pytest.raises(ValueError, match=r"numbered 1 \.\. 9"):
            names.controller_files(bad)


# ---------------------------------------------------------------- OVS


def test_every_controller_is_set_on_the_bridge_in_one_transaction(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, ...]] = []

    def vsctl(*args: str, check: bool = True) -> str:
        seen.append(args)
        return ""

    monkeypatch.setattr(ovs, "vsctl", vsctl)
    ovs.set_controllers("br-t7", ["tcp:127.0.0.1:1", "tcp:127.0.0.1:2"])
    assert seen == [(
        "--", "--id=@c0", "create", "controller", 'target="tcp:127.0.0.1:1"',
        "connection_mode=out-of-band", "max_backoff=1000",
        "--", "--id=@c1", "create", "controller", 'target="tcp:127.0.0.1:2"',
        "connection_mode=out-of-band", "max_backoff=1000",
        "--", "set", "bridge", "br-t7", "controller=[@c0,@c1]")]


def test_the_switch_s_view_of_each_controller_is_read_from_ovsdb(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {
        ("get", "bridge", "br-t7", "controller"): "[uuid-a, uuid-b]",
        ("--format=json", "--columns=target,is_connected,role", "list", "controller",
         "uuid-a", "uuid-b"): json.dumps({"data": [["tcp:127.0.0.1:1", True, "master"],
                                                   ["tcp:127.0.0.1:2", False,
                                                    ["set", []]]],
                                          "headings": ["target", "is_connected", "role"]}),
    }
    monkeypatch.setattr(ovs, "vsctl", lambda *args, check=True: answers.get(args, ""))
    assert ovs.controller_links("br-t7") == [
        ovs.ControllerLink("tcp:127.0.0.1:1", True, "master"),
        ovs.ControllerLink("tcp:127.0.0.1:2", False, "")]
    assert ovs.controller_links("br-none") == []


# ---------------------------------------------------------------- topo.watch


def run_watched(tmp_path: Path, *command: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    pid_path, exit_path = tmp_path / "x.pid", tmp_path / "x.exit"
    exit_path.write_text("99\n")  # a previous run's
    watcher = subprocess.Popen([sys.executable, "-m", "topo.watch", str(pid_path),
                                str(exit_path), "--", *command], cwd=REPO)
    return watcher, pid_path, exit_path


def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    end = time.monotonic() + within
    while not condition():
        assert time.monotonic() < end, "not within the time"
        time.sleep(0.02)


def test_the_watcher_records_the_pid_and_the_exit_status(tmp_path: Path) -> None:
    watcher, pid_path, exit_path = run_watched(
        tmp_path, sys.executable, "-c", "import time, sys; time.sleep(0.5); sys.exit(3)")
    until(lambda: pid_path.exists())
    pid = int(pid_path.read_text())
    assert pid != watcher.pid and watch.read_exit(exit_path) is None
    assert watcher.wait(10) == 0
    assert watch.read_exit(exit_path) == 3
    assert watch.describe_exit(3) == "exited 3"


def test_the_watcher_records_the_signal_that_killed_the_command(tmp_path: Path) -> None:
    watcher, pid_path, exit_path = run_watched(tmp_path, "sleep", "30")
    try:
        until(lambda: pid_path.exists())
        os.kill(int(pid_path.read_text()), signal.SIGKILL)
        assert watcher.wait(10) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watch.read_exit(exit_path) == -signal.SIGKILL
    assert watch.describe_exit(-9) == "killed by SIGKILL"
    assert watch.describe_exit(-200) == "killed by signal 200"


def test_the_watcher_passes_sigterm_on(tmp_path: Path) -> None:
    watcher, pid_path, exit_path = run_watched(tmp_path, "sleep", "30")
    until(lambda: pid_path.exists())
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(10) == 0
    assert watch.read_exit(exit_path) == -signal.SIGTERM


def test_the_watcher_says_how_it_is_used_and_what_it_cannot_start(tmp_path: Path) -> None:
    assert watch.main(["a"]) == 2
    assert watch.main([str(tmp_path / "p"), str(tmp_path / "e"), "--",
                       str(tmp_path / "missing")]) == 1
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------- the commands


@pytest.fixture
def lab_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The labs' folders go to ``tmp_path``; no OVS command may run."""
    monkeypatch.setattr(names, "DEFAULT_RUN_DIR", tmp_path / "pptp-alg-lab")

    def no_command(argv: Any, **_: Any) -> str:
        raise AssertionError(f"ran {argv}")

    monkeypatch.setattr(netns, "run", no_command)
    monkeypatch.setattr(ovs, "bridge_exists", lambda bridge: False)
    return tmp_path


@pytest.fixture
def stand_ins() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; each is killed by PID at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for one in started:
        if one.poll() is None:
            one.kill()
        one.wait(10)


def stand_in(started: list[subprocess.Popen[bytes]], config_path: str) -> int:
    """A process that ``controller.is_controller`` takes for the controller of
    ``config_path``."""
    one = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                            names.GATEWAY_COMMAND, "--config-file", config_path])
    started.append(one)
    return one.pid


def recorded_up(name: str = "t7", controllers: int = 2) -> lab.LabState:
    state = on_etcd(name, controllers)
    state.phase = "up"
    Path(state.run_dir).mkdir(parents=True, exist_ok=True)
    lab.write_state(state)
    return state


def test_a_controller_s_line_says_its_roles_or_how_it_ended(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = recorded_up()
    c1, c2 = state.controllers
    c1.pid, c2.pid = 1234, 1235
    monkeypatch.setattr(standbys, "running", lambda one: one.index == 1)
    monkeypatch.setattr(standbys, "roles", lambda s, one: {"default": "master"})
    assert standbys.controller_line(state, c1) == "controller 1 (pid 1234, c1): default master"
    assert standbys.controller_line(state, c2) == "controller 2 (pid 1235, c2): not running"
    Path(c2.exit_path).write_text("3\n")
    assert standbys.controller_line(state, c2) == (
        "controller 2 (pid 1235, c2): not running (exited 3)")
    Path(c1.proxy_state_path).write_text(json.dumps({"cut": True}))
    monkeypatch.setattr(standbys, "roles",
                        lambda s, one: {"g1": "master cut off", "g2": "standby"})
    assert standbys.controller_line(state, c1) == (
        "controller 1 (pid 1234, c1, cut from etcd): g1 master cut off, g2 standby")
    monkeypatch.setattr(standbys, "roles", lambda s, one: None)
    assert standbys.controller_line(state, c1).endswith(
        f"running, REST {c1.rest_url} not answering")


def test_the_master_is_the_one_that_says_so_or_the_switch_s_when_two_do(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = on_etcd(controllers=3, bridges=2)
    said: dict[int, dict[str, str]] = {1: {"g1": "standby", "g2": "master"},
                                       2: {"g1": "master", "g2": "standby"},
                                       3: {"g1": "candidate", "g2": "standby"}}
    monkeypatch.setattr(standbys, "running", lambda one: True)
    monkeypatch.setattr(standbys, "roles", lambda s, one: said[one.index])
    assert standbys.app_gateway(state, "g2") == "g2"
    assert standbys.current_master(state) == 2
    assert standbys.current_master(state, "g2") == 1
    said[3]["g1"] = "master"
    monkeypatch.setattr(ovs, "controller_links", lambda bridge: [
        ovs.ControllerLink(state.controller_at(3).target, True, "master"),
        ovs.ControllerLink(state.controller_at(2).target, True, "slave")])
    assert standbys.current_master(state) == 3
    monkeypatch.setattr(ovs, "controller_links", lambda bridge: [])
    assert standbys.current_master(state) is None
    said[2]["g1"] = said[3]["g1"] = "standby"
    assert standbys.current_master(state) is None
    one = on_etcd(controllers=2)
    assert standbys.app_gateway(one) == "default"
    with pytest.raises(ValueError, match=r"gateways g1 \.\. g1"):
        standbys.app_gateway(one, "g2")


def test_the_rest_answer_gives_the_roles(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = on_etcd()
    monkeypatch.setattr(standbys, "rest_gateways", lambda s, one: [
        {"name": "default", "role": "standby", "connected": True}])
    assert standbys.roles(state, state.controllers[0]) == {"default": "standby"}
    monkeypatch.setattr(standbys, "rest_gateways", lambda s, one: [{"name": "default"}])
    assert standbys.roles(state, state.controllers[0]) == {"default": "?"}
    monkeypatch.undo()
    state.controllers[0].rest_port = lab.pick_ports(set(), 1)[0]  # nothing listens there
    assert standbys.rest_gateways(state, state.controllers[0]) is None


def test_kill_controller_kills_the_master_by_pid_with_sigkill(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch,
    stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    state = recorded_up()
    for one in state.controllers:
        one.pid = stand_in(stand_ins, one.config_path)
    lab.write_state(state)
    monkeypatch.setattr(standbys, "roles", lambda s, one: {
        "default": "master" if one.index == 2 else "standby"})
    killed = lab.kill_controller("t7", master=True)
    assert killed.index == 2
    assert stand_ins[1].wait(5) == -signal.SIGKILL and stand_ins[0].poll() is None
    with pytest.raises(lab.LabError, match=r"controller 2 .* is not running"):
        lab.kill_controller("t7", index=2)
    monkeypatch.setattr(standbys, "roles", lambda s, one: {"default": "standby"})
    with pytest.raises(lab.LabError, match="no controller of lab t7 is master of gateway "
                                           "default now"):
        lab.kill_controller("t7", master=True)
    with pytest.raises(ValueError, match="by its index, or as the master"):
        lab.kill_controller("t7", index=1, master=True)
    with pytest.raises(ValueError, match=r"controllers 1 \.\. 2, not 3"):
        lab.kill_controller("t7", index=3)
    lab.kill_controller("t7", index=1)
    assert stand_ins[0].wait(5) == -signal.SIGKILL


def test_the_commands_refuse_a_lab_without_state_or_on_sqlite(lab_dir: Path) -> None:
    for call in (lambda: lab.kill_controller("t7", index=1),
                 lambda: lab.start_controller("t7", 1),
                 lambda: lab.cut_controller("t7", 1),
                 lambda: lab.wait_master("t7", timeout=0)):
        with pytest.raises(lab.LabError, match="lab t7 has no state file"):
            call()
    assert not lab.run_dir("t7").exists()
    state = lab.plan(1, name="t7")
    Path(state.run_dir).mkdir(parents=True)
    lab.write_state(state)
    with pytest.raises(lab.LabError, match=r"one controller on sqlite: `python -m topo.lab up "
                                           r"--name t7 --replace --controllers N"):
        lab.kill_controller("t7", index=1)


def test_start_controller_refuses_one_that_runs(
    lab_dir: Path, stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    state = recorded_up()
    state.controllers[0].pid = stand_in(stand_ins, state.controllers[0].config_path)
    lab.write_state(state)
    with pytest.raises(lab.LabError, match="controller 1 of lab t7 runs"):
        lab.start_controller("t7", 1)


def test_cut_controller_signals_the_proxy_and_waits_for_its_answer(
    lab_dir: Path, stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    state = recorded_up()
    one = state.controllers[1]
    proxy = subprocess.Popen([sys.executable, "-m", "topo.etcd_proxy", "--state",
                              one.proxy_state_path, "--forward", "0=127.0.0.1:1"], cwd=REPO)
    stand_ins.append(proxy)
    one.proxy_pid = proxy.pid
    lab.write_state(state)
    until(lambda: standbys.proxy_state(one).get("pid") == proxy.pid)
    with pytest.raises(lab.LabError, match=r"the etcd proxy of controller 1 .* not running"):
        lab.cut_controller("t7", 1)
    lab.cut_controller("t7", 2)
    assert standbys.is_cut(one)
    lab.cut_controller("t7", 2, cut=False)
    assert not standbys.is_cut(one)
    assert standbys.remains("t7", lab.read_state("t7")) == [
        f"the etcd proxy of its controller 2 (pid {proxy.pid})"]


def test_wait_master_returns_the_index_or_says_who_is_what(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_up()
    masters = iter([None, None, 2])
    monkeypatch.setattr(standbys, "current_master", lambda s, g: next(masters))
    monkeypatch.setattr(standbys, "POLL", 0.01)
    assert lab.wait_master("t7", timeout=5) == 2
    monkeypatch.setattr(standbys, "current_master", lambda s, g: 1)
    with pytest.raises(lab.LabError, match=r"no controller of lab t7 but 1 is master of "
                                           r"gateway default after 0\.1 s:\ncontroller 1"):
        lab.wait_master("t7", timeout=0.1, but=[1])


def test_problems_of_a_lab_on_etcd(lab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = recorded_up()
    monkeypatch.setattr(ovs, "bridge_exists", lambda bridge: True)
    monkeypatch.setattr(ovs, "controller_links", lambda bridge: [
        ovs.ControllerLink("tcp:127.0.0.1:1", True, "master")])
    monkeypatch.setattr(standbys, "running", lambda one: one.index == 2)
    monkeypatch.setattr(standbys, "member_runs", lambda member: member.name != "m1")
    assert standbys.problems(state) == []
    assert health.problems(state) == []
    monkeypatch.setattr(standbys, "member_runs", lambda member: member.name == "m1")
    monkeypatch.setattr(standbys, "running", lambda one: False)
    monkeypatch.setattr(ovs, "controller_links", lambda bridge: [])
    assert standbys.problems(state) == [
        f"br-t7 is not connected to any of {state.controller}",
        "no pptp-alg-gateway of the lab is running",
        "etcd has no majority: 1 of 3 members run"]


def test_restart_controller_is_refused_on_etcd(lab_dir: Path) -> None:
    recorded_up()
    with pytest.raises(lab.LabError, match=r"2 controller.* on etcd: `python -m topo.lab "
                                           r"kill-controller --name t7 --index I`"):
        lab.restart_controller(name="t7")


def test_another_lab_never_picks_a_port_a_lab_on_etcd_recorded(lab_dir: Path) -> None:
    from topo.lab import ports

    state = recorded_up()
    assert state.tcp_ports() <= ports.taken_ports()
    assert not state.tcp_ports() & ports.taken_ports(but="t7") - {6653, 8723}


@pytest.mark.skipif(etcd_cluster.etcd_binary() is None,
                    reason="no etcd binary (Debian's etcd-server)")
def test_the_lab_s_etcd_cluster_starts_and_down_stops_it_even_without_a_state_file(
    lab_dir: Path
) -> None:
    state = lab.plan(1, name="t7", store="etcd")
    Path(state.run_dir).mkdir(parents=True)
    state.use_etcd_ports(lab.pick_ports(set(), state.etcd_port_count()))
    lab.write_state(state)
    try:
        standbys.start_etcd(state, quiet=True)
        assert all(standbys.member_runs(m) for m in state.etcd)
        recorded = lab.read_state("t7")
        assert recorded is not None and [m.pid for m in recorded.etcd] == [
            m.pid for m in state.etcd]
        assert all(Path(m.pid_path).read_text().strip() == str(m.pid) for m in state.etcd)
        assert [f"its etcd member {m.name} (pid {m.pid})" for m in state.etcd] == \
            standbys.remains("t7", None)
        Path(state.state_path).unlink()
        standbys.stop("t7", None, quiet=True)
        assert not any(standbys.member_runs(m) for m in state.etcd)
        assert not any(Path(m.data_dir).exists() or Path(m.pid_path).exists()
                       for m in state.etcd)
        assert Path(state.etcd[0].log_path).exists()
    finally:
        for member in state.etcd:
            if member.pid is not None:
                etcd_cluster.stop_pid(member.pid, member.data_dir)


def test_stop_stops_only_the_lab_s_own_processes(
    lab_dir: Path, stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    state = recorded_up()
    c1, c2 = state.controllers
    c1.pid = stand_in(stand_ins, c1.config_path)
    c2.pid = stand_in(stand_ins, "/elsewhere/gateway.conf")  # not this lab's
    Path(c1.config_path).write_text("")
    lab.write_state(state)
    standbys.stop("t7", state, quiet=True)
    assert stand_ins[0].wait(10) == -signal.SIGTERM
    assert stand_ins[1].poll() is None
    assert not Path(c1.config_path).exists()


# ---------------------------------------------------------------- the command line


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(health, "describe", lambda name, gateway=None: (True, "lab: up"))


def test_cli_up_takes_controllers_and_a_store(
    as_root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[dict[str, Any]] = []
    monkeypatch.setattr(netns_backend, "up", lambda *a, **kw: called.append(kw))
    assert lab.main(["up", "--clients", "1", "--name", "t7", "--controllers", "2",
                     "--store", "etcd"]) == 0
    assert (called[-1]["controllers"], called[-1]["store"]) == (2, "etcd")
    assert lab.main(["up", "--clients", "1"]) == 0
    assert (called[-1]["controllers"], called[-1]["store"]) == (1, "sqlite")
    with pytest.raises(SystemExit):
        lab.main(["up", "--clients", "1", "--store", "redis"])


def test_cli_up_refuses_several_controllers_on_sqlite(
    as_root: None, lab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab.main(["up", "--clients", "1", "--name", "t7", "--controllers", "2"]) == 1
    assert "2 controllers need store etcd" in capsys.readouterr().err
    assert not lab.run_dir("t7").exists()


@pytest.mark.parametrize(("argv", "function", "expected"), [
    (["kill-controller", "--name", "t7", "--master"], "kill_controller",
     (("t7",), {"index": None, "master": True, "gateway": None, "quiet": False})),
    (["kill-controller", "--name", "t7", "--master", "--gateway", "g2"], "kill_controller",
     (("t7",), {"index": None, "master": True, "gateway": "g2", "quiet": False})),
    (["kill-controller", "--name", "t7", "--index", "2"], "kill_controller",
     (("t7",), {"index": 2, "master": False, "gateway": None, "quiet": False})),
    (["start-controller", "--name", "t7", "--index", "2", "--timeout", "9"],
     "start_controller", (("t7", 2), {"timeout": 9.0, "quiet": False})),
    (["cut-controller", "--name", "t7", "--index", "1"], "cut_controller",
     (("t7", 1), {"cut": True, "quiet": False})),
    (["uncut-controller", "--name", "t7", "--index", "1"], "cut_controller",
     (("t7", 1), {"cut": False, "quiet": False})),
    (["wait-master", "--name", "t7", "--gateway", "g2", "--timeout", "4"], "wait_master",
     (("t7", "g2"), {"timeout": 4.0})),
])
def test_cli_runs_the_controllers_commands(
    argv: list[str], function: str, expected: tuple[tuple[Any, ...], dict[str, Any]],
    as_root: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    called: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(*args: Any, **kwargs: Any) -> int:
        called.append((args, kwargs))
        return 2

    monkeypatch.setattr(standbys, function, record)
    assert lab.main(argv) == 0
    assert called == [expected]
    if function == "wait_master":
        assert capsys.readouterr().out == "2\n"


@pytest.mark.parametrize("argv", [["kill-controller"],
                                  ["kill-controller", "--index", "1", "--master"],
                                  ["start-controller"], ["cut-controller"]])
def test_cli_wants_one_controller(argv: list[str], as_root: None) -> None:
    with pytest.raises(SystemExit):
        lab.main(argv)


def test_cli_reports_a_lab_error_of_the_controllers_commands(
    as_root: None, lab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab.main(["kill-controller", "--name", "t7", "--index", "1"]) == 1
    assert "topo.lab: lab t7 has no state file" in capsys.readouterr().err


def test_cli_display_of_a_lab_on_etcd_reads_the_master_s_rest(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from topo import display

    seen: list[list[str]] = []

    def shown(argv: list[str]) -> int:
        seen.append(list(argv))
        return 0

    monkeypatch.setattr(display, "main", shown)
    state = recorded_up()
    monkeypatch.setattr(standbys, "current_master", lambda s, g: 2)
    assert lab.main(["display", "--name", "t7", "counters"]) == 0
    monkeypatch.setattr(standbys, "current_master", lambda s, g: None)
    assert lab.main(["display", "--name", "t7", "counters"]) == 0
    assert seen == [["--rest", state.controller_at(2).rest_url, "counters"],
                    ["--rest", state.controller_at(1).rest_url, "counters"]]
