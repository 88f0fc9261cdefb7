"""What ``/metrics`` says and what reads it: every counter's help text, the histograms,
the process's and build metrics, and the Grafana dashboard and the Prometheus alerting
rules of ``dashboards/`` (``promtool check rules``, ``promtool test rules``, and every
metric, label and label value they name against the running app's own ``/metrics``).

The app is the one of ``test_gateway_app`` on a fake switch. ``promtool`` comes with
Debian's ``prometheus`` package, which ``scripts/setup.sh`` installs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from alg.counters import Counters, CounterSet
from alg.neighbours import NeighbourCounters
from demux.link import DemuxCounters
from ryu_apps import framework
from ryu_apps.effects import AppCounters
from ryu_apps.metrics import ERROR_KINDS
from ryu_apps.nat_gateway import NatGateway, ProcessCounters
from tests.unit.app_env import CLIENT, CLIENT_MAC, IN1, SERVER
from tests.unit.fake_switch import FakeDatapath
from tests.unit.pptp_flows import ControlLink, ocrp, ocrq
from tests.unit.test_gateway_app import (
    Clock,
    app,
    clock,
    dp,
    ether,
    get,
    learn_server,
    udp_out,
)

FIXTURES = (app, clock, dp)
"""The fixtures of ``test_gateway_app`` that the tests here take: the app on a fake
switch, its clock and the switch."""

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "pptp-alg.json"
RULES = ROOT / "dashboards" / "alerts.yml"
RULE_TESTS = ROOT / "dashboards" / "alerts.test.yml"
COUNTER_SETS: tuple[type[CounterSet], ...] = (
    Counters, AppCounters, NeighbourCounters, DemuxCounters, ProcessCounters)
FROM_PROMETHEUS = {"up"}
"""Series Prometheus makes itself at each scrape."""
FROM_PROMETHEUS_LABELS = {"job", "instance", "le"}
"""Labels Prometheus adds (``job``, ``instance``) or a histogram's buckets have (``le``)."""
CHECKED_VALUES = ("kind", "direction", "path", "proto", "role")
"""Labels whose values in a query must be values the app exports."""


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    path = shutil.which("promtool")
    assert path is not None, "promtool is missing: scripts/setup.sh installs it (prometheus)"
    return subprocess.run([path, *args], input=stdin, capture_output=True, timeout=60,
                          check=False)


def exposition(app: NatGateway) -> bytes:
    status, _, body = get(app, "/metrics")
    assert status == "200 OK"
    return body


def samples(app: NatGateway) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(exposition(app).decode())
            for sample in family.samples]


# Help texts.

def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.mark.parametrize("counters", COUNTER_SETS, ids=lambda c: c.__name__)
def test_every_counter_has_help_that_says_more_than_its_name(
    counters: type[CounterSet]
) -> None:
    texts = counters.help()
    assert texts.keys() == counters().as_dict().keys()
    for name, text in texts.items():
        assert len(text.split()) >= 4, (name, text)
        assert not _words(text) <= _words(name.replace("_", " ")), (name, text)
        assert "\n" not in text and text == text.strip() and text[0].isupper(), (name, text)


def test_every_error_kind_is_a_counter_with_help() -> None:
    texts = {name: text for counters in COUNTER_SETS for name, text in counters.help().items()}
    assert texts.keys() >= ERROR_KINDS


def test_every_metric_family_of_the_scrape_has_help_and_promtool_finds_nothing(
    app: NatGateway
) -> None:
    body = exposition(app)
    families = list(text_string_to_metric_families(body.decode()))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), "a metric family twice"
    for family in families:
        assert family.documentation, family.name
        bare = family.name.removeprefix("pptp_alg_").replace("_", " ")
        assert family.documentation.lower() != bare, family.name
    linted = promtool("check", "metrics", stdin=body)
    assert linted.returncode == 0, (linted.stdout + linted.stderr).decode()


# The process's and the build's metrics.

def test_the_process_metrics_and_build_info_have_no_gateway_label(app: NatGateway) -> None:
    by_name = {sample.name: sample for sample in samples(app)}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds", "python_info"):
        assert name in by_name and "gateway" not in by_name[name].labels, name
    assert by_name["process_open_fds"].value > 0
    with (ROOT / "pyproject.toml").open("rb") as file:
        version = tomllib.load(file)["project"]["version"]
    info = by_name["pptp_alg_build_info"]
    assert info.value == 1
    assert info.labels["version"] == version
    assert info.labels["framework"] == framework.NAME
    assert info.labels["framework_version"] not in ("", "unknown")


def test_the_switch_and_demultiplexer_gauges(app: NatGateway) -> None:
    values = {sample.name: sample.value for sample in samples(app)
              if sample.labels.get("gateway") == "default"}
    assert values["pptp_alg_switch_connected"] == 1
    assert values["pptp_alg_switch_ready"] == 1
    assert values["pptp_alg_gre_demux_configured"] == 0
    app.unit.gone()
    values = {sample.name: sample.value for sample in samples(app)
              if sample.labels.get("gateway") == "default"}
    assert values["pptp_alg_switch_connected"] == 0
    assert values["pptp_alg_switch_ready"] == 0


# Histograms.

def _histogram(app: NatGateway, name: str, **labels: str) -> dict[str, float]:
    """A histogram's samples of gateway ``default``: ``le`` -> count, and ``sum``,
    ``count``."""
    out: dict[str, float] = {}
    for sample in samples(app):
        if not sample.name.startswith(name) or any(
                sample.labels.get(k) != v for k, v in {"gateway": "default", **labels}.items()):
            continue
        key = sample.labels["le"] if sample.name.endswith("_bucket") else sample.name[
            len(name) + 1:]
        out[key] = sample.value
    return out


def test_the_call_setup_time_of_a_call_through_the_app(
    app: NatGateway, dp: FakeDatapath, clock: Clock
) -> None:
    learn_server(app, dp)
    link = ControlLink(app.core, CLIENT, 40000, SERVER, now=clock.now).start()
    link.client_send(ocrq(5))
    b = link.call_id_to_server()
    link.now += 0.3
    link.server_send(ocrp(700, b))
    outgoing = _histogram(app, "pptp_alg_call_setup_seconds", direction="outgoing")
    assert (outgoing["count"], outgoing["sum"]) == (1, pytest.approx(0.3))
    assert (outgoing["0.25"], outgoing["0.5"], outgoing["+Inf"]) == (0, 1, 1)
    incoming = _histogram(app, "pptp_alg_call_setup_seconds", direction="incoming")
    assert incoming["count"] == 0


def test_the_packet_in_handling_time_by_a_monotonic_clock(
    app: NatGateway, dp: FakeDatapath
) -> None:
    learn_server(app, dp)
    ticks = iter((5.0, 5.0004, 6.0, 6.02))
    app.unit.timer = lambda: next(ticks)
    msg = SimpleNamespace(reason=dp.ofproto.OFPR_ACTION, datapath=dp,
                          match={"in_port": IN1}, data=ether(CLIENT_MAC, udp_out()),
                          table_id=0)
    app._packet_in(SimpleNamespace(msg=msg))
    app._packet_in(SimpleNamespace(msg=msg))
    handling = _histogram(app, "pptp_alg_packet_in_handling_seconds")
    assert (handling["count"], handling["sum"]) == (2, pytest.approx(0.0204))
    assert (handling["0.00025"], handling["0.0005"], handling["0.025"]) == (0, 1, 2)
    assert app.counters.packet_ins == 2


# The dashboard's and the rules' queries.

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_NAME = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels)."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = _GROUPING.sub(" ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)
    return {m.group(1) for m in _NAME.finditer(expr)
            if m.group(2) is None and m.group(1).lower() not in KEYWORDS}


def label_uses(expr: str) -> Iterator[tuple[str, str, str]]:
    """The label matchers (label, operator, value) of a PromQL expression, and the labels
    of its grouping clauses (label, "", "")."""
    for m in _MATCHER.finditer(expr):
        yield m.group(1), m.group(2), json.loads(m.group(3))
    for m in _GROUPING.finditer(expr):
        for label in m.group(2).split(","):
            if label.strip():
                yield label.strip(), "", ""


def test_metric_names_reads_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (gateway, le) (rate(a_bucket{x=~"$g", '
            'kind="b c"}[5m] offset 1h))) > 0 and on (instance) up{job="j"} unless '
            "c_total * 1e3")
    assert metric_names(expr) == {"a_bucket", "up", "c_total"}
    assert set(label_uses(expr)) == {("x", "=~", "$g"), ("kind", "=", "b c"),
                                     ("job", "=", "j"), ("gateway", "", ""), ("le", "", ""),
                                     ("instance", "", "")}


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel's targets and every query variable."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", text.strip())
        assert match is not None, text
        yield f"variable {variable['name']}", f"{match.group(1)} by ({match.group(2)})"


def rule_queries() -> Iterator[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]


def test_the_dashboard_is_a_grafana_dashboard_of_variables_and_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["gridPos"]["w"] <= 24, panel
        if panel["type"] == "row":
            continue
        assert panel["description"] and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_every_metric_label_and_value_of_the_dashboard_and_rules_is_exported(
    app: NatGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lease age is exported only while the gateway holds its election key.
    monkeypatch.setattr(app.unit, "lease_age", lambda: 0.5)
    scraped = samples(app)
    names = {sample.name for sample in scraped} | FROM_PROMETHEUS
    labels = {label for sample in scraped for label in sample.labels} | FROM_PROMETHEUS_LABELS
    values = {label: {sample.labels[label] for sample in scraped if label in sample.labels}
              for label in CHECKED_VALUES}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [*dashboard_queries(dashboard), *rule_queries()]
    assert len(queries) > 20
    for where, expr in queries:
        used = metric_names(expr)
        assert used, (where, expr)
        assert used <= names, (where, sorted(used - names))
        for label, operator, value in label_uses(expr):
            assert label in labels, (where, label)
            if label in values and operator in ("=", "=~"):
                wanted = set(value.split("|")) if operator == "=~" else {value}
                assert wanted <= values[label], (where, label, sorted(wanted - values[label]))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert label in labels, (panel["title"], label)


def test_the_alerting_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, (tested.stdout + tested.stderr).decode()
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"]
              for rule in group["rules"]}
    assert alerts == {"PptpAlgControllerDown", "PptpAlgSwitchDisconnected",
                      "PptpAlgSwitchNotReady", "PptpAlgPacketInsDropped",
                      "PptpAlgCallIdAllocationFailures", "PptpAlgGreDemuxMissing",
                      "PptpAlgStoreErrors", "PptpAlgNoMaster", "PptpAlgMasterCutOff",
                      "PptpAlgCallsRefusedCutOff"}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    assert alerts == {case["alertname"] for test in tests
                      for case in test["alert_rule_test"] if case["exp_alerts"]}
