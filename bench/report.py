"""What a run prints and keeps: a table per kind of scenario, the figures
derived from them, the charts, and all of it in bench/results/<UTC timestamp>.json."""

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from matplotlib.figure import Figure

from bench.scenarios import Scenario, loads
from bench.stack import Stack
from deploy.settings import REPO

RESULTS = REPO / "bench" / "results"
SECRETS = r"KEY|PASSWORD|SECRET|TOKEN|DATABASE_URL"  # variables kept out of the JSON
MS = f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'errors':>6}"
CLOSED = f"{'scenario':<26} {'conc':>4} {'rps':>7} {MS} {'srv ms':>6}  cpu % of one core"
OPEN = f"{'path':<10} {'offered':>7} {'achieved':>8} {MS} {'lag ms':>6}  cpu % of one core"
Step = Mapping[str, Any]
Legs = Sequence[Mapping[str, Any]]


def say(text: str = "") -> None:
    print(text, flush=True)


def ms(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def codes(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{code} {count}" for code, count in errors.items())


def per_call(step: Step, name: str) -> float:
    """`name`'s CPU time per successful call, ms: steadier than RPS on a
    shared machine, and the same figure on two cores as on sixty-four."""
    return 10 * step["cpu_percent"].get(name, math.nan) / step["rps"] if step["rps"] else math.nan


def finite(value: Any) -> Any:
    """JSON has no NaN: a figure without samples becomes null."""
    return json.loads(json.dumps(value), parse_constant=lambda _: None)


def closed_row(label: str, step: Step) -> None:
    server = "echo" if "echo" in step["cpu_percent"] else "gateway"
    say(
        f"{label:<26} {step['concurrency']:>4} {step['rps']:>7.0f} {ms(step['p50_ms']):>7} "
        f"{ms(step['p90_ms']):>7} {ms(step['p99_ms']):>7} {step['errors']:>6} "
        f"{ms(per_call(step, server)):>6}  {cpu_cell(step)}"
    )
    if step["error_codes"]:
        say(f"    errors: {codes(step['error_codes'])}")


def open_row(label: str, step: Step) -> None:
    say(
        f"{label:<10} {step['offered_rps']:>7.0f} {step['rps']:>8.0f} {ms(step['p50_ms'], 1):>7} "
        f"{ms(step['p90_ms'], 1):>7} {ms(step['p99_ms'], 1):>7} {step['errors']:>6} "
        f"{ms(step['send_lag_p99_ms'], 1):>6}  {cpu_line(step)}"
        + (f"; {codes(step['error_codes'])}" if step["error_codes"] else "")
    )


def cpu_line(step: Step) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in step["cpu_percent"].items())


def cpu_cell(step: Step) -> str:
    """`gateway 150 (98+52; conns 5+3), client 60`: for a server with several
    worker processes, each one's CPU and the connections the kernel gave it
    (SO_REUSEPORT places connections, not calls)."""
    parts = []
    for name, total in step["cpu_percent"].items():
        workers = [p for p in step["processes"][name] if p["listens"]]
        parts.append(f"{name} {total:.0f}")
        if name in ("echo", "gateway") and len(workers) > 1:
            cpu = "+".join(f"{p['cpu_percent']:.0f}" for p in workers)
            parts[-1] += f" ({cpu}; conns {'+'.join(str(p['connections']) for p in workers)})"
    return ", ".join(parts)


def edge_cost(label: str, direct: Sequence[Step], via: Sequence[Step]) -> dict[str, float]:
    """What the edge costs, as medians: Envoy's CPU per call beside the
    gateway's behind it and direct, and the latency it adds."""

    def median(steps: Sequence[Step], figure: Callable[[Step], float]) -> float:
        return statistics.median(figure(step) for step in steps)

    found = {
        "envoy_ms_per_call": median(via, lambda step: per_call(step, "envoy")),
        "gateway_ms_per_call_behind_envoy": median(via, lambda step: per_call(step, "gateway")),
        "gateway_ms_per_call_direct": median(direct, lambda step: per_call(step, "gateway")),
        "p50_ms_added": median(via, lambda s: s["p50_ms"]) - median(direct, lambda s: s["p50_ms"]),
    }
    envoy, behind, alone, _ = (ms(value) for value in found.values())
    say(
        f"  {label}: Envoy {envoy} ms of CPU per call beside the gateway's {behind} ms "
        f"behind it ({alone} ms direct); p50 {found['p50_ms_added']:+.2f} ms"
    )
    return found


class Report:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args, self.stack, self.loads = args, stack, loads(args)
        self.started = datetime.now(UTC)
        self.stamp = f"{self.started:%Y%m%dT%H%M%SZ}"
        self.load_average = os.getloadavg()
        self.rows: dict[str, tuple[Scenario, Step]] = {}
        self.figures: dict[str, Any] = {}

    def add(self, scenario: Scenario, legs: Legs) -> None:
        if scenario.report != "row" or not self.rows:
            self.heading(scenario)
        found = getattr(self, scenario.report)(scenario, legs)
        self.figures[scenario.name] = finite({"legs": legs} | (found or {}))

    def heading(self, scenario: Scenario) -> None:
        load, channels = self.loads[scenario.load], self.args.channels
        if load.concurrency:
            how = f"{load.concurrency} calls in flight on {channels} channels, {load.duration:g} s"
        else:
            rates = ",".join(f"{rate:g}" for rate in load.rates)
            how = f"open loop at {rates} calls/s, {load.duration:g} s each (latency from due time)"
        rounds = f", {load.rounds} rounds taking the paths in turn" if load.rounds > 1 else ""
        title = "each scenario" if scenario.report == "row" else scenario.label
        workers = f"{self.args.workers} worker processes per Python server (NUELL_WORKERS)"
        say(
            f"\n{title}: {how} after {load.warmup:g} s of warm-up{rounds}; {workers}; "
            f"load average {os.getloadavg()[0]:.2f}\n"
        )

    def row(self, scenario: Scenario, legs: Legs) -> None:
        if not self.rows:
            say(CLOSED)
        self.rows[scenario.name] = (scenario, legs[0]["steps"][0])
        closed_row(scenario.label, legs[0]["steps"][0])

    def summary(self) -> dict[str, Any]:
        """Each direct row's RPS as a share of each echo's; each row via an Envoy, its cost."""
        found: dict[str, Any] = {}
        echoes = {n: step for n, (s, step) in self.rows.items() if s.targets[0].startswith("echo")}
        direct = {s.calls: step for s, step in self.rows.values() if s.targets == ("gateway",)}
        say()
        for name, (scenario, step) in self.rows.items():
            if scenario.targets == ("gateway",) and scenario.load == "closed":
                for echo, ceiling in ((e, c) for e, c in echoes.items() if c["rps"]):
                    found[f"{name} rps % of {echo}"] = share = 100 * step["rps"] / ceiling["rps"]
                    say(f"  {name} rps % of {echo}: {share:.0f}%")
            elif "envoy" in step["cpu_percent"] and scenario.calls in direct:
                found[name] = edge_cost(scenario.label, [direct[scenario.calls]], [step])
        return found

    def paths(self, scenario: Scenario, legs: Legs) -> dict[str, float]:
        """Direct and via Envoy, a row per leg, then what the edge costs."""
        closed = "concurrency" in legs[0]["steps"][0]
        say(CLOSED if closed else OPEN)
        steps: dict[str, list[Step]] = {"gateway": [], "edge": []}
        for n, leg in enumerate(legs):
            path, step = "direct" if leg["via"] == "gateway" else "via Envoy", leg["steps"][0]
            label = f"{path}, round {n // 2 + 1}" if len(legs) > 2 else path
            (closed_row if closed else open_row)(label, step)
            steps[leg["via"]].append(step)
        say()
        return edge_cost("the edge (medians)", steps["gateway"], steps["edge"])

    def mix(self, scenario: Scenario, legs: Legs) -> None:
        self.edge_limit()
        self.mix_table(legs[0]["steps"][0])

    def edge_limit(self) -> None:
        limit = "/min, burst ".join(self.stack.edge_auth_limit.values())
        say(f"its edge: the Login/Register limit raised to {limit} (one client makes every call)\n")

    def mix_table(self, step: Step) -> None:
        weights = self.args.mix_weights
        say(f"{'rpc':<11} {'weight':>6} {'calls':>6} {'rps':>6} {MS}")
        for name, found in [*step["rpcs"].items(), ("all", step)]:
            share = f"{100 * weights[name] / sum(weights.values()):.0f}%" if name in weights else ""
            latency = " ".join(f"{ms(found[f'p{p}_ms'], 1):>7}" for p in (50, 90, 99))
            counts = f"{found['calls']:>6} {found['rps']:>6.0f}"
            say(f"{name:<11} {share:>6} {counts} {latency} {codes(found['error_codes']) or '-':>6}")
        say(f"cpu % of one core: {cpu_line(step)}")

    def sweep(self, scenario: Scenario, legs: Legs) -> dict[str, Any]:
        self.edge_limit()
        say(OPEN)
        steps = legs[0]["steps"]
        for step in steps:
            open_row("via Envoy", step)
        holding = [
            s["offered_rps"] for s in steps if s["p99_ms"] < 100 and s["errors"] * 100 <= s["calls"]
        ]
        best = max(holding, default=None)
        held = "none" if best is None else f"{best:g} calls/s"
        say(f"\nlargest offered load with p99 < 100 ms (and < 1% errors): {held}")
        title = f"Mix via Envoy, {self.args.workers} gateway workers, {os.cpu_count()} cores"
        charted = self.chart(latency_chart(steps), "latency", title)
        return {"largest_offered_rps_p99_under_100ms": best} | charted

    def soak(self, scenario: Scenario, legs: Legs) -> dict[str, Any]:
        step, samples = legs[0]["steps"][0], legs[0]["samples"]
        self.edge_limit()
        say("per process tree every 5 s: RSS / private MB, TCP+Unix connections; the last 5 s")
        for s in samples:
            done = [b for b in step["buckets"] if b["t_s"] + b["seconds"] <= s["t_s"] + 0.5]
            last = f"{done[-1]['rps']:.0f}/s, p99 {ms(done[-1]['p99_ms'], 1)} ms" if done else "-"
            parts = (
                f"{n} {s['rss_mb'][n]:.1f} / {s['private_mb'][n]:.1f}, {s['connections'][n]:.0f}"
                for n in s["rss_mb"]
            )
            say(f"{s['t_s']:>5.0f} s  {'; '.join(parts)};  {last}")
        say()
        self.mix_table(step)
        found = verdicts(samples)
        say("\nfirst third to last third:")
        for measure, v in found.items():
            growth = "n/a" if v["growth_percent"] is None else f"{v['growth_percent']:+.1f}%"
            verdict = "flat" if v["flat"] else "GROWS"
            say(f"  {measure:<26} {v['first']:>8.1f} -> {v['last']:>8.1f}  {growth:>8}  {verdict}")
        # RSS counts shared pages (PostgreSQL's buffers, touched by more backends over
        # time): a grown RSS beside flat private memory is no leak.
        grown = ", ".join(m for m, v in found.items() if not v["flat"])
        overall = f"growth of 10% or more in: {grown}" if grown else "flat: every part within 10%"
        say(f"soak verdict: {overall if found else 'too short to judge (under 3 samples)'}")
        title = f"Soak: mix via Envoy at {self.args.soak_rate:g} calls/s for {self.args.soak:g} s"
        charted = self.chart(soak_chart(samples, step["buckets"]), "soak", title)
        return {"verdicts": found, "verdict": overall} | charted

    def chart(self, figure: Figure, kind: str, title: str) -> dict[str, str]:
        figure.axes[0].set_title(f"{title} ({self.stamp})", fontsize=10)
        figure.tight_layout()
        figure.savefig(path := RESULTS / f"{self.stamp}-{kind}.png")
        say(f"chart: {path.relative_to(REPO)}")
        return {"chart": str(path.relative_to(REPO))}

    def save(self) -> Path:
        if self.rows:
            self.figures["summary"] = finite(self.summary())
        report = {
            "timestamp": self.started.isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "grpcio": grpc.__version__,
                "load_average_at_start": list(self.load_average),
            },
            "settings": vars(self.args),
            "database": self.stack.database,
            # NUELL_* variables that reached the gateway, secrets left out.
            "tuning": {
                name: value
                for name, value in sorted(os.environ.items())
                if name.startswith("NUELL_") and not re.search(SECRETS, name)
            },
            "scenarios": self.figures,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.stamp}.json"
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return path


def verdicts(samples: Sequence[Step]) -> dict[str, dict[str, Any]]:
    """Mean of the last third over the first; flat under 10% (connections: or within two)."""
    found: dict[str, dict[str, Any]] = {}
    third = len(samples) // 3
    for measure in ("rss_mb", "private_mb", "connections") if third else ():
        for name in samples[0][measure]:
            values = [s[measure][name] for s in samples]
            first, last = sum(values[:third]) / third, sum(values[-third:]) / third
            change = last / first - 1 if first else (0.0 if last == first else math.inf)
            steady = measure == "connections" and abs(values[-1] - values[0]) <= 2
            found[f"{name} {measure}"] = {
                "growth_percent": 100 * change if math.isfinite(change) else None,
                "first": values[0],
                "last": values[-1],
                "flat": abs(change) < 0.10 or steady,
            }
    return found


def latency_chart(steps: Legs) -> Figure:
    """p50 and p99 (log scale) and achieved RPS against offered load."""
    offered = [step["offered_rps"] for step in steps]
    figure = Figure(figsize=(8, 5), dpi=110)
    latency = figure.subplots()
    for key, style in (("p50", "o-"), ("p99", "s-")):
        latency.plot(offered, [s[f"{key}_ms"] for s in steps], style, label=f"{key} latency")
    latency.axhline(100, color="grey", linestyle=":", label="100 ms")
    latency.set(yscale="log", xlabel="offered load (calls/s)", ylabel="latency (ms, log scale)")
    latency.grid(True, which="both", alpha=0.3)
    achieved = latency.twinx()
    achieved.plot(offered, [s["rps"] for s in steps], "^--", color="tab:green")
    achieved.plot(offered, offered, ":", color="tab:green", alpha=0.4)
    achieved.set_ylabel("achieved calls/s (dotted: = offered)", color="tab:green")
    achieved.set_ylim(0, max(offered) * 1.1)
    lines, labels = latency.get_legend_handles_labels()
    latency.legend([*lines, achieved.lines[0]], [*labels, "achieved RPS"], loc="upper left")
    return figure


def soak_chart(samples: Legs, buckets: Legs) -> Figure:
    """Memory and connections per process tree, and latency, over the soak."""
    figure = Figure(figsize=(8, 9), dpi=110)
    rss, conns, latency = figure.subplots(3, 1, sharex=True)
    t = [sample["t_s"] for sample in samples]
    for name in samples[0]["rss_mb"] if samples else ():
        (line,) = rss.plot(t, [s["rss_mb"][name] for s in samples], "o-", label=f"{name} RSS")
        private = [s["private_mb"][name] for s in samples]
        rss.plot(t, private, "--", color=line.get_color(), label=f"{name} private")
        conns.plot(t, [s["connections"][name] for s in samples], "o-", label=name)
    middle = [bucket["t_s"] + bucket["seconds"] / 2 for bucket in buckets]
    for key in ("p50", "p99"):
        latency.plot(middle, [b[f"{key}_ms"] for b in buckets], "o-", label=key)
    rss.set_ylabel("MB per process tree\n(solid RSS, dashed private)")
    conns.set_ylabel("open TCP + Unix\nconnections")
    latency.set(ylabel="latency (ms)", xlabel="seconds into the soak")
    for axis in (rss, conns, latency):
        axis.legend(loc="upper left", fontsize=8)
        axis.grid(True, alpha=0.3)
        axis.set_ylim(bottom=0)
    return figure
