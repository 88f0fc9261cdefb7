"""Prometheus metrics of the live lab: ``/metrics`` on the REST address agrees with the
REST counters and views."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.gateway_lab import PUBLIC_IP, GatewayLab, wait_for
from topo.standin_ppp import StandinConfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
CALL_ID = 4242


def scrape(gw: GatewayLab) -> Samples:
    with urllib.request.urlopen(gw.state.rest_url + "/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            # The lab's one gateway, [nat] alone: every sample of it says so.
            if sample.name != "pptp_alg_switches_refused_total":
                assert labels.pop("gateway", None) == "default", sample
            samples[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return samples


def everything(gw: GatewayLab) -> dict[str, Any]:
    body: dict[str, Any] = gw.rest("/pptp-alg/counters")
    return body


def metric_of(samples: Samples, name: str) -> float:
    """A counter's value whether it is exported under its name or as an error kind."""
    plain = samples.get((f"pptp_alg_{name}_total", ()))
    if plain is not None:
        return plain
    return samples[("pptp_alg_errors_total", (("kind", name),))]


def test_metrics_agree_with_the_rest_counters_of_a_lab_with_two_calls(gateway: Factory) -> None:
    gw = gateway(2)
    gw.pptpd(standin=StandinConfig(tag="srv{pid}", count=5, interval=0.05))
    for i in (1, 2):
        repl = gw.repl(gw.client(i))
        repl("start")
        assert repl("call", call_id=CALL_ID)["fields"]["result"] == 1
    gw.wait_established(2)
    wait_for(lambda: everything(gw)["alg"]["gre_controller_path"] > 0, 10,
             "the server's GRE of the translated call, through the controller")
    time.sleep(1.0)

    before = everything(gw)
    samples = scrape(gw)
    after = everything(gw)
    for section in ("alg", "app", "neighbours"):
        for name, value in before[section].items():
            if name == "calls_in_progress":
                continue
            assert value <= metric_of(samples, name) <= after[section][name], name
    assert samples[("pptp_alg_calls_in_progress", ())] == 2
    assert samples[("pptp_alg_calls_set_up_total", ())] == 2
    assert samples[("pptp_alg_call_ids_translated_total", ())] >= 1
    sessions = gw.sessions()
    for proto in ("tcp", "udp", "icmp"):
        assert samples[("pptp_alg_nat_sessions", (("proto", proto),))] == sum(
            1 for s in sessions if s["proto"] == proto)
    assert samples[("pptp_alg_public_address_hosts", (("public_ip", PUBLIC_IP),))] == 2
    controller_in = (("direction", "inbound"), ("path", "controller"))
    assert samples[("pptp_alg_gre_packets_total", controller_in)] == after["alg"][
        "gre_controller_path"] - after["gre"]["controller"]["outbound"]["packets"]
    assert samples[("pptp_alg_gre_bytes_total", controller_in)] > 0
    assert samples[("pptp_alg_flow_entries", ())] in (
        before["switch"]["flow_entries"], after["switch"]["flow_entries"])
    assert after["switch"]["flow_entries"] > 0
