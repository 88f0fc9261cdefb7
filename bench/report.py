"""The bench's output: the machine's description and the tables, in Markdown."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterable

from bench.gre_rate import C2S, S2C, SIZES, GreResult
from bench.scale import ScaleResult
from bench.sessions import PROTOCOLS, SessionResult
from bench.setup_latency import MODES, SetupResult, mode_label

REFERENCE = "ovs-conntrack"
"""Figure 6's ratios are to this peer's: ordinary NAT in the datapath, no controller."""
GOAL_PEER, GOAL = "gateway-conntrack", 0.9
"""New sessions per second of this peer, at least this share of :data:`REFERENCE`'s."""


def machine() -> str:
    """Cores, memory, kernel, OVS and Python versions."""
    memory = "?"
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        ovs = subprocess.run(["ovs-vswitchd", "--version"], capture_output=True, text=True,
                             timeout=5, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        ovs = "ovs-vswitchd ?"
    return (f"Machine: {os.cpu_count()} cores, {memory}, Linux {platform.release()}, "
            f"{ovs}, Python {platform.python_version()}.")


def _cell(value: float | None, form: str = ".2f") -> str:
    """A table cell: the value in ``form``, or "-" where there is none."""
    return "-" if value is None else format(value, form)


def _ratio(value: float | None, best: float | None) -> str:
    """A ratio-to-best cell: "-" where either is missing or the best is zero."""
    return "-" if value is None or not best else f"{value / best:.2f}"


def _median(values: Iterable[float | None]) -> float | None:
    """The median of the values there are, None if there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _best(values: dict[str, float | None], pick: Callable[[list[float]], float]
          ) -> float | None:
    """The best (``pick``: min or max) of the values there are, None if there are none."""
    known = [v for v in values.values() if v is not None]
    return pick(known) if known else None


def _rate(run: SetupResult) -> float | None:
    """Calls (connections) set up per second, None for a run that asked for none or took
    no time."""
    return run.calls_per_second if run.calls and run.seconds > 0 else None


def _figures(runs: dict[str, list[SetupResult]]
             ) -> tuple[dict[str, float | None], dict[str, float | None],
                        dict[str, float | None]]:
    """Per peer, medians over rounds of the setup median, p99 and rate; None where no
    round set anything up (or, for the rate, asked for anything)."""
    return ({p: _median(r.median_us if r.latencies else None for r in rs)
             for p, rs in runs.items()},
            {p: _median(r.p99_us if r.latencies else None for r in rs)
             for p, rs in runs.items()},
            {p: _median(_rate(r) for r in rs) for p, rs in runs.items()})


def _fastest_first(median: dict[str, float | None]) -> list[str]:
    """Peers by setup median, those without one last."""
    return sorted(median, key=lambda p: (median[p] is None, median[p] or 0.0))


def tcp_table(results: Iterable[SetupResult]) -> str:
    """New TCP connections through each peer: connect-to-answer time and rate, medians
    over rounds, ratios to the best peer ("-" where a peer or the best has no figure)."""
    runs: dict[str, list[SetupResult]] = defaultdict(list)
    for r in results:
        if r.mode == "tcp":
            runs[r.peer].append(r)
    if not runs:
        return ""
    median, _, rate = _figures(runs)
    lines = [
        "| peer | connect to answer, median (us) | ratio to best | connections/s | "
        "ratio to best | failed |",
        "|---|---|---|---|---|---|",
    ]
    best_latency = _best(median, min)
    best_rate = _best(rate, max)
    for p in _fastest_first(median):
        lines.append(
            f"| {p} | {_cell(median[p], '.0f')} | {_ratio(median[p], best_latency)} | "
            f"{_cell(rate[p], '.0f')} | {_ratio(rate[p], best_rate)} | "
            f"{sum(r.failed for r in runs[p])} |")
    return "\n".join(lines)


def _session_figures(runs: list[SessionResult]) -> dict[str, float | None]:
    """One peer's figure 6 over rounds: medians of each run's figures, and the
    packet-ins of all rounds (None where no round had them)."""
    counts = [r.packet_ins for r in runs if r.packet_ins is not None]
    return {"rate": _median(r.per_second for r in runs),
            "latency": _median(r.median_us for r in runs),
            "packet_ins": float(sum(counts)) if counts else None,
            "per_session": _median(r.packet_ins_per_session for r in runs),
            "cpu": _median(r.cpu_us_per_session for r in runs),
            "share": _median(r.cpu_share for r in runs)}


def _sessions_by_proto(results: Iterable[SessionResult]
                       ) -> dict[str, dict[str, list[SessionResult]]]:
    runs: dict[str, dict[str, list[SessionResult]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if not r.first:
            runs[r.proto][r.peer].append(r)
    return runs


def sessions_table(results: Iterable[SessionResult], reference: str = REFERENCE) -> str:
    """New ordinary sessions per protocol and peer, fastest first: sessions per second
    and its ratio to ``reference``'s ("-" where either has none), connect-to-answer
    median, the app's packet-ins (all rounds, and per session), the controller's CPU
    time per session and its share of one core during the runs (medians over rounds;
    "-" for a peer without an app or a controller)."""
    runs = _sessions_by_proto(results)
    if not runs:
        return ""
    lines = [
        "| sessions | peer | sessions/s | ratio to " + reference + " | connect to answer, "
        "median (us) | packet-ins | packet-ins per session | controller CPU per session "
        "(us) | controller CPU, share of a core | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for proto in sorted(runs, key=lambda p: (p not in PROTOCOLS, p)):
        figures = {peer: _session_figures(rs) for peer, rs in runs[proto].items()}
        best = figures.get(reference, {}).get("rate")
        for peer in sorted(figures, key=lambda p: (figures[p]["rate"] is None,
                                                    -(figures[p]["rate"] or 0.0))):
            f = figures[peer]
            lines.append(
                f"| {proto.upper()} | {peer} | {_cell(f['rate'], ',.0f')} | "
                f"{_ratio(f['rate'], best)} | {_cell(f['latency'], ',.0f')} | "
                f"{_cell(f['packet_ins'], ',.0f')} | {_cell(f['per_session'], '.4f')} | "
                f"{_cell(f['cpu'], ',.0f')} | {_cell(f['share'], '.0%')} | "
                f"{sum(r.failed for r in runs[proto][peer])} |")
    return "\n".join(lines)


def sessions_goal(results: Iterable[SessionResult], peer: str = GOAL_PEER,
                  reference: str = REFERENCE, goal: float = GOAL) -> str:
    """Whether ``peer`` opened new sessions at least ``goal`` times as fast as
    ``reference``, per protocol: the median over rounds of each round's ratio (the two
    peers' runs of one round, in the order they ran, are the closest in time: the
    machine's load drifts between rounds), with the lowest and highest; "" where neither
    peer ran."""
    runs = _sessions_by_proto(results)
    verdicts = []
    for proto in sorted(runs, key=lambda p: (p not in PROTOCOLS, p)):
        if peer not in runs[proto] and reference not in runs[proto]:
            continue
        ratios = [mine.per_second / theirs.per_second
                  for mine, theirs in zip(runs[proto].get(peer, []),
                                          runs[proto].get(reference, []), strict=False)
                  if mine.per_second is not None and theirs.per_second]
        if not ratios:
            verdicts.append(f"{proto.upper()} not measured")
            continue
        ratio = statistics.median(ratios)
        spread = f", rounds {min(ratios):.2f} to {max(ratios):.2f}" if len(ratios) > 1 else ""
        verdicts.append(f"{proto.upper()} {ratio:.2f} ({'met' if ratio >= goal else 'not met'}"
                        f"{spread})")
    if not verdicts:
        return ""
    return (f"Goal: {peer} at least {goal:.2f} times {reference}'s new sessions per second "
            "(median of the rounds' ratios): " + ", ".join(verdicts) + ".")


def first_table(results: Iterable[SessionResult]) -> str:
    """The inside host's first sessions through each peer, all at once: the slowest one's
    connect-to-answer time and the app's packet-ins, each round's in the order they ran
    ("-" where none was answered or the peer has no app), failures of all rounds."""
    runs: dict[str, list[SessionResult]] = defaultdict(list)
    for r in results:
        if r.first:
            runs[r.peer].append(r)
    if not runs:
        return ""
    lines = ["| peer | sessions | slowest connect to answer, each round (us) | packet-ins, "
             "each round | failed |",
             "|---|---|---|---|---|"]
    for peer, rs in sorted(runs.items(), key=lambda kv: kv[0]):
        slowest = " / ".join(_cell(r.slowest_us, ",.0f") for r in rs)
        counts = " / ".join(_cell(r.packet_ins, ".0f") for r in rs)
        lines.append(f"| {peer} | {rs[0].proto.upper()}, {rs[0].sessions} at once | "
                     f"{slowest} | {counts} | {sum(r.failed for r in rs)} |")
    return "\n".join(lines)


def _gre_rows(results: Iterable[GreResult]
              ) -> dict[tuple[str, int, str], tuple[float, float, int, int]]:
    """(direction, payload, peer) -> median offered and delivered packets/s over rounds,
    packets sent and delivered in all rounds."""
    runs: dict[tuple[str, int, str], list[GreResult]] = defaultdict(list)
    for r in results:
        runs[(r.direction, r.payload, r.peer)].append(r)
    return {k: (statistics.median(r.offered_pps for r in rs),
                statistics.median(r.delivered_pps for r in rs),
                sum(r.sent for r in rs), sum(r.delivered for r in rs))
            for k, rs in runs.items()}


def gre_table(results: Iterable[GreResult]) -> str:
    """GRE packets per second per direction, payload and peer: offered and delivered
    (medians over rounds), delivered's ratio to the best peer ("-" where the best
    delivered none), and the share of the packets sent that arrived ("-" where none were
    sent)."""
    rows = _gre_rows(results)
    if not rows:
        return ""
    lines = [
        "| direction | payload (bytes) | peer | offered (packets/s) | delivered (packets/s) "
        "| ratio to best | delivered of sent |",
        "|---|---|---|---|---|---|---|",
    ]
    for direction in (C2S, S2C):
        for size in SIZES:
            peers = {k[2]: v for k, v in rows.items() if k[:2] == (direction, size)}
            if not peers:
                continue
            best = max(v[1] for v in peers.values())
            for peer in sorted(peers, key=lambda p: -peers[p][1]):
                offered, delivered, sent, arrived = peers[peer]
                lines.append(
                    f"| {direction} | {size} | {peer} | {offered:,.0f} | {delivered:,.0f} | "
                    f"{_ratio(delivered, best)} | "
                    f"{_cell(arrived / sent if sent else None, '.0%')} |")
    return "\n".join(lines)


def scale_table(results: Iterable[ScaleResult]) -> str:
    """Calls held at once per peer: time to set them all up ("-" calls/s where none were
    asked for or it took no time), and what each costs."""
    lines = [
        "| peer | public addresses | calls | held | time to set up all (s) | calls/s | "
        "controller memory per call (bytes) | flow entries per call | packet-ins per call | "
        "conntrack entries per call |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (r.calls, r.peer, r.public_ips)):
        rate = r.held / r.setup_seconds if r.calls and r.setup_seconds > 0 else None
        lines.append(
            f"| {r.peer} | {r.public_ips} | {r.calls:,} | {r.held:,} | {r.setup_seconds:.1f} | "
            f"{_cell(rate, ',.0f')} | "
            f"{_cell(r.memory_per_call, ',.0f')} | {_cell(r.flow_entries_per_call, '.3f')} | "
            f"{_cell(r.packet_ins_per_call)} | {_cell(r.conntrack_per_call, '.3f')} |")
    failures = [f"{r.peer} ({r.public_ips} public, {r.calls} calls): {r.failures[0]}"
                for r in results if r.failures]
    return "\n".join(lines + ([""] + ["First failure: " + f for f in failures]
                               if failures else []))


def setup_table(results: Iterable[SetupResult]) -> str:
    """Call setup per mode and peer: medians over rounds, ratios to the best peer ("-"
    where a peer or the best has no figure: no call set up, none asked for)."""
    rows: dict[tuple[str, str], list[SetupResult]] = defaultdict(list)
    for r in results:
        rows[(r.mode, r.peer)].append(r)
    lines = [
        "| calls on | peer | setup median (us) | p99 (us) | ratio to best | calls/s | "
        "ratio to best | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        peers = {peer: runs for (m, peer), runs in rows.items() if m == mode}
        if not peers:
            continue
        median, p99, rate = _figures(peers)
        best_latency = _best(median, min)
        best_rate = _best(rate, max)
        for p in _fastest_first(median):
            failed = sum(r.failed for r in peers[p])
            lines.append(
                f"| {mode_label(mode, peers[p][0].connections)} | {p} | "
                f"{_cell(median[p], '.0f')} | {_cell(p99[p], '.0f')} | "
                f"{_ratio(median[p], best_latency)} | {_cell(rate[p], '.0f')} | "
                f"{_ratio(rate[p], best_rate)} | {failed} |")
    return "\n".join(lines)


def chart(results: Iterable[SetupResult], path: str | os.PathLike[str],
          gre: Iterable[GreResult] = ()) -> None:
    """A PNG: call setup latency (median, with p99 above it) and calls per second, per
    peer and kind of connection, and GRE packets delivered per second per peer, each
    direction and payload, medians over rounds; no file where there is neither."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[tuple[str, str], list[SetupResult]] = defaultdict(list)
    for r in results:
        rows[(r.mode, r.peer)].append(r)
    modes = [m for m in MODES if any(k[0] == m for k in rows)]
    packets = _gre_rows(gre)
    if not modes and not packets:
        return
    fig, axes = plt.subplots(len(modes) + bool(packets), 2,
                             figsize=(11, 3.2 * len(modes) + 4 * bool(packets)), squeeze=False)
    for row, mode in enumerate(modes):
        peers = sorted((p for m, p in rows if m == mode),
                       key=lambda p: statistics.median(r.median_us for r in rows[(mode, p)]))
        median = [statistics.median(r.median_us for r in rows[(mode, p)]) / 1000 for p in peers]
        p99 = [statistics.median(r.p99_us for r in rows[(mode, p)]) / 1000 for p in peers]
        rate = [statistics.median(r.calls_per_second for r in rows[(mode, p)]) for p in peers]
        left, right = axes[row]
        left.barh(peers, p99, color="#d9d9d9", label="p99")
        left.barh(peers, median, color="#4c72b0", label="median")
        left.set_xlabel("call setup (ms)")
        label = mode_label(mode, rows[(mode, peers[0])][0].connections)
        left.set_title(f"call setup, {label}", fontsize=9)
        left.legend(loc="lower right")
        right.barh(peers, rate, color="#55a868")
        right.set_xlabel("calls per second")
        right.set_title(f"sustained, {label}", fontsize=9)
    if packets:
        peers = sorted({k[2] for k in packets},
                       key=lambda p: max(v[1] for k, v in packets.items() if k[2] == p))
        for col, size in enumerate(SIZES):
            axis = axes[len(modes)][col]
            for offset, (direction, color) in enumerate(((C2S, "#8172b2"), (S2C, "#c44e52"))):
                values = [packets.get((direction, size, p), (0, 0, 0, 0))[1] / 1000
                          for p in peers]
                axis.barh([i + 0.4 * offset for i in range(len(peers))], values, height=0.4,
                          color=color, label=direction)
            axis.set_yticks([i + 0.2 for i in range(len(peers))], peers)
            axis.set_xlabel("GRE delivered (thousand packets/s)")
            axis.set_title(f"GRE, {size}-byte payload")
            axis.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
