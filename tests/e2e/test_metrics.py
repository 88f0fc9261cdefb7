"""Prometheus metrics of the live lab: ``/metrics`` on the REST address agrees with the
REST counters and views, and has the histograms, the build's and the process's metrics."""

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
PROCESS_OWN = {"pptp_alg_switches_refused_total", "pptp_alg_build_info"}
"""The process's own samples named ``pptp_alg_``: no ``gateway`` label (nor have the
``process_`` and ``python_`` ones)."""


def scrape(gw: GatewayLab) -> Samples:
    with urllib.request.urlopen(gw.state.rest_url + "/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            # The lab's one gateway, [nat] alone: every sample of it says so.
            if sample.name.startswith("pptp_alg_") and sample.name not in PROCESS_OWN:
                assert labels.pop("gateway", None) == "default", sample
            else:
                assert "gateway" not in labels, sample
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
    outgoing = (("direction", "outgoing"),)
    assert samples[("pptp_alg_call_setup_seconds_count", outgoing)] == 2
    assert 0 < samples[("pptp_alg_call_setup_seconds_sum", outgoing)] < 10
    assert samples[("pptp_alg_call_setup_seconds_count", (("direction", "incoming"),))] == 0
    assert samples[("pptp_alg_packet_in_handling_seconds_count", ())] == samples[
        ("pptp_alg_packet_ins_total", ())] > 0
    assert samples[("pptp_alg_switch_connected", ())] == 1
    assert samples[("pptp_alg_switch_ready", ())] == 1
    info = [labels for name, labels in samples if name == "pptp_alg_build_info"]
    assert len(info) == 1 and dict(info[0])["framework"] in ("ryu", "os-ken")
    assert samples[("process_open_fds", ())] > 0
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert samples[("process_cpu_seconds_total", ())] > 0
