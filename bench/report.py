"""What a run prints and keeps: one table per kind of scenario, the figures
derived from them, the charts, and everything in bench/results/<UTC timestamp>.json."""

from __future__ import annotations

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

from bench import charts
from bench.scenarios import Scenario
from bench.stack import Stack
from deploy.settings import REPO

RESULTS = REPO / "bench" / "results"
P99_TARGET_MS = 100.0
MAX_ERROR_SHARE = 0.01  # an offered load "holds" with p99 under target and under 1% errors
FLAT_GROWTH = 0.10  # the soak: first third to last third, relative
Legs = Sequence[Mapping[str, Any]]


def say(text: str = "") -> None:
    print(text, flush=True)


def ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def codes(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{code} {count}" for code, count in errors.items()) or "-"


def per_call(step: Mapping[str, Any], name: str) -> float:
    """`name`'s CPU time per successful call, ms: steadier than RPS on a
    shared machine, and the same figure on two cores as on sixty-four."""
    rps = step["rps"]
    return 10 * step["cpu_percent"].get(name, math.nan) / rps if rps else math.nan


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"


def finite(value: Any) -> Any:
    """JSON has no NaN: a figure without samples becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


class Report:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args, self.stack = args, stack
        self.started = datetime.now(UTC)
        self.stamp = f"{self.started:%Y%m%dT%H%M%SZ}"
        self.load_average = os.getloadavg()
        self.results: dict[str, tuple[Scenario, Legs]] = {}
        self.figures: dict[str, dict[str, Any]] = {}
        if self.load_average[0] > 0.5:
            say(f"note: {load_average()} before starting; other work here skews the figures")

    def add(self, scenario: Scenario, legs: Legs) -> None:
        self.results[scenario.name] = (scenario, legs)
        found = PRINTERS[scenario.report](self, scenario, legs)
        self.figures[scenario.name] = {"legs": finite(legs)} | finite(found or {})

    def save(self) -> Path:
        self.figures["summary"] = finite(self.summary())
        args = {k: v for k, v in vars(self.args).items() if k not in ("only",)}
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
            "settings": args,
            "database": self.stack.database,
            # NUELL_* variables that reached the gateway, secrets left out.
            "tuning": {
                name: value
                for name, value in sorted(os.environ.items())
                if name.startswith("NUELL_")
                and not re.search(r"KEY|PASSWORD|SECRET|TOKEN|DATABASE_URL", name)
            },
            "scenarios": self.figures,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.stamp}.json"
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return path

    def chart(self, draw: Callable[..., Path], *data: Any, title: str, kind: str) -> dict[str, str]:
        path = draw(*finite(data), f"{title} ({self.stamp})", RESULTS / f"{self.stamp}-{kind}.png")
        say(f"chart: {path.relative_to(REPO)}")
        return {"chart": str(path.relative_to(REPO))}

    # --- the table of closed-loop rows -----------------------------------------------

    def row(self, scenario: Scenario, legs: Legs) -> None:
        if not any(s.report == "row" for s, _ in list(self.results.values())[:-1]):
            a = self.args
            say(
                f"\n{a.duration:g} s per scenario after {a.warmup:g} s of warm-up, {a.workers} "
                "worker process(es) per Python server (NUELL_WORKERS), one client process "
                f"with {a.channels} channels\n"
            )
            say(
                f"{'scenario':<26} {'conc':>4} {'rps':>7} {'p50 ms':>7} {'p90 ms':>7} "
                f"{'p99 ms':>7} {'errors':>6} {'srv ms':>6}  cpu % of one core"
            )
        step = legs[0]["steps"][0]
        server = "echo" if "echo" in step["cpu_percent"] else "gateway"
        say(
            f"{scenario.label:<26} {step['concurrency']:>4} {step['rps']:>7.0f} "
            f"{ms(step['p50_ms'], 2):>7} {ms(step['p90_ms'], 2):>7} {ms(step['p99_ms'], 2):>7} "
            f"{step['errors']:>6} {ms(per_call(step, server), 2):>6}  {cpu_cell(step)}"
        )
        if step["error_codes"]:
            say(f"    errors: {codes(step['error_codes'])}")

    def summary(self) -> dict[str, float]:
        """Each direct row's RPS as a share of each echo's; each edge row's
        CPU per call, Envoy's beside the gateway's, and its added p50."""
        rows = {
            name: (scenario, legs[0]["steps"][0])
            for name, (scenario, legs) in self.results.items()
            if scenario.report == "row"
        }
        found: dict[str, float] = {}
        echoes = [
            (name, step) for name, (s, step) in rows.items() if s.targets[0].startswith("echo")
        ]
        for name, (scenario, step) in rows.items():
            direct = next(
                (
                    d
                    for d, (s, _) in rows.items()
                    if s.calls == scenario.calls and s.targets == ("gateway",)
                ),
                None,
            )
            if scenario.targets == ("gateway",) and scenario.load == "closed":
                for echo, ceiling in echoes:
                    if ceiling["rps"]:
                        found[f"{name} rps % of {echo}"] = 100 * step["rps"] / ceiling["rps"]
            elif "envoy" in step["cpu_percent"] and direct is not None:
                found[f"{name} envoy ms per call"] = per_call(step, "envoy")
                found[f"{name} gateway ms per call"] = per_call(step, "gateway")
                found[f"{direct} gateway ms per call"] = per_call(rows[direct][1], "gateway")
                found[f"{name} p50 ms over direct"] = step["p50_ms"] - rows[direct][1]["p50_ms"]
        if found:
            say()
        for key, value in found.items():
            unit = "%" if key.endswith(("%", "echo", "echo-1")) else "ms"
            say(f"  {key:<46} {value:{'+' if 'over' in key else ''}9.2f} {unit}")
        return found

    # --- the edge's cost per call ----------------------------------------------------

    def edge(self, scenario: Scenario, legs: Legs) -> dict[str, Any]:
        a = self.args
        say(
            f"\n{scenario.label}: {a.concurrency} calls in flight, {a.edge_rounds} rounds of "
            f"{a.edge_duration:g} s per path after {a.warmup:g} s of warm-up, in turn; "
            f"{load_average()}\n"
        )
        say(
            f"{'path':<10} {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  "
            "CPU ms per call: gateway, envoy (medians of the rounds)"
        )
        found: dict[str, Any] = {}
        for via, label in (("gateway", "direct"), ("edge", "via Envoy")):
            steps = [leg["steps"][0] for leg in legs if leg["via"] == via]
            median = {
                key: statistics.median(pick(step) for step in steps)
                for key, pick in (
                    ("rps", lambda s: s["rps"]),
                    ("p50_ms", lambda s: s["p50_ms"]),
                    ("p99_ms", lambda s: s["p99_ms"]),
                    ("gateway_ms_per_call", lambda s: per_call(s, "gateway")),
                    ("envoy_ms_per_call", lambda s: per_call(s, "envoy")),
                )
            }
            errors = sum(step["errors"] for step in steps)
            say(
                f"{label:<10} {median['rps']:>7.0f} {ms(median['p50_ms'], 2):>7} "
                f"{ms(median['p99_ms'], 2):>7} {errors:>6}  gateway "
                f"{ms(median['gateway_ms_per_call'], 2)}, "
                f"envoy {ms(median['envoy_ms_per_call'], 2)}"
            )
            found[label] = median | {"errors": errors}
        envoy, gateway = (
            found["via Envoy"]["envoy_ms_per_call"],
            found["direct"]["gateway_ms_per_call"],
        )
        say(
            f"\n  the edge: Envoy {ms(envoy, 2)} ms of CPU per call beside the gateway's "
            f"{ms(gateway, 2)} ms direct ({ms(100 * envoy / gateway, 0)}%)"
        )
        return found

    def paced(self, scenario: Scenario, legs: Legs) -> dict[str, float]:
        say(
            f"\n{scenario.label}: {self.args.paced_rate:g} calls/s, open loop, "
            f"{self.args.duration:g} s after {self.args.warmup:g} s of warm-up; latency from "
            f"each call's scheduled send; {load_average()}\n"
        )
        say(
            f"{'path':<12} {'offered':>8} {'served':>7} {'p50 ms':>7} {'p90 ms':>7} "
            f"{'p99 ms':>7} {'errors':>6}  cpu ms per call"
        )
        steps = {leg["via"]: leg["steps"][0] for leg in legs}
        for via, step in steps.items():
            cpu = ", ".join(f"{name} {ms(per_call(step, name), 2)}" for name in step["cpu_percent"])
            say(
                f"{'direct' if via == 'gateway' else 'via Envoy':<12} {step['offered_rps']:>8.0f} "
                f"{step['rps']:>7.0f} {ms(step['p50_ms'], 2):>7} {ms(step['p90_ms'], 2):>7} "
                f"{ms(step['p99_ms'], 2):>7} {step['errors']:>6}  {cpu}"
            )

        def servers(step: Mapping[str, Any]) -> float:
            return sum(per_call(step, name) for name in step["cpu_percent"] if name != "client")

        direct, edge = steps["gateway"], steps["edge"]
        found = {
            "p50 ms over direct": edge["p50_ms"] - direct["p50_ms"],
            "p99 ms over direct": edge["p99_ms"] - direct["p99_ms"],
            "envoy ms per call": per_call(edge, "envoy"),
            "servers' cpu ms per call over direct": servers(edge) - servers(direct),
        }
        say()
        for key, value in found.items():
            say(f"  {key:<40} {value:+8.2f}")
        return found

    # --- the mix -----------------------------------------------------------------------

    def mix(self, scenario: Scenario, legs: Legs) -> None:
        a = self.args
        say(
            f"\n{self.edge_limit()}\n\n{scenario.label}: {a.mix_concurrency} calls in flight on "
            f"{a.channels} channels, {a.mix_duration:g} s after {a.warmup:g} s of warm-up, "
            f"seed {a.seed}; {load_average()}\n"
        )
        for line in mix_table(legs[0]["steps"][0], a.mix_weights):
            say(line)

    def edge_limit(self) -> str:
        limit = self.stack.edge_auth_limit
        return (
            "edge for the mix: Login/Register rate limit raised to "
            f"{limit['NUELL_EDGE_AUTH_RATE_PER_MINUTE']}/min per client, burst "
            f"{limit['NUELL_EDGE_AUTH_BURST']} ({', '.join(limit)}); the default would "
            "refuse the mix's logins"
        )

    def sweep(self, scenario: Scenario, legs: Legs) -> dict[str, Any]:
        a = self.args
        rates = ",".join(f"{rate:g}" for rate in a.rates)
        say(
            f"\n{self.edge_limit()}\n\n{scenario.label} (constant arrival rate): {rates} calls/s, "
            f"{a.step_duration:g} s each, every call waited for (deadline {a.mix_timeout:g} s); "
            f"latency from each call's scheduled send; {load_average()}\n"
        )
        say(
            f"{'offered':>7} {'achieved':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>8} "
            f"{'errors':>6} {'lag ms':>6}  cpu % of one core; errors by code"
        )
        steps = legs[0]["steps"]
        for step in steps:
            say(
                f"{step['offered_rps']:>7.0f} {step['rps']:>8.0f} {ms(step['p50_ms']):>7} "
                f"{ms(step['p90_ms']):>7} {ms(step['p99_ms']):>8} {step['errors']:>6} "
                f"{ms(step['send_lag_p99_ms']):>6}  {cpu_line(step['cpu_percent'])}"
                + (f"; {codes(step['error_codes'])}" if step["error_codes"] else "")
            )
        holding = [
            s["offered_rps"]
            for s in steps
            if s["p99_ms"] < P99_TARGET_MS and s["errors"] <= MAX_ERROR_SHARE * s["calls"]
        ]
        best = max(holding, default=None)
        say(
            "\nlargest offered load with p99 < 100 ms (and < 1% errors): "
            + (f"{best:g} calls/s" if best is not None else f"none of {rates} calls/s")
        )
        title = f"Mix via Envoy, {a.workers} gateway workers, {os.cpu_count()} cores"
        return {"largest_offered_rps_p99_under_100ms": best} | self.chart(
            charts.latency_chart, steps, title=title, kind="latency"
        )

    def soak(self, scenario: Scenario, legs: Legs) -> dict[str, Any]:
        a = self.args
        say(
            f"\n{self.edge_limit()}\n\n{scenario.label} at {a.soak_rate:g} calls/s for "
            f"{a.soak:g} s, sampling memory and connections every 5 s; {load_average()}\n"
        )
        step = legs[0]["steps"][0]
        samples = [s for s in legs[0]["samples"] if s["t_s"] <= a.soak + 0.5]
        for line in [*soak_table(samples, step["buckets"]), "", *mix_table(step, a.mix_weights)]:
            say(line)
        found = verdicts(samples)
        say("\nfirst third to last third:")
        for measure, verdict in found.items():
            change = verdict["growth_percent"]
            say(
                f"  {measure:<26} {verdict['first']:>8.1f} -> {verdict['last']:>8.1f}  "
                f"{'n/a' if change is None else f'{change:+.1f}%':>8}  "
                f"{'flat' if verdict['flat'] else 'GROWS'}"
            )
        say(f"soak verdict: {(overall := verdict_line(found))}")
        title = f"Soak: mix via Envoy at {a.soak_rate:g} calls/s for {a.soak:g} s"
        charted = self.chart(charts.soak_chart, samples, step["buckets"], title=title, kind="soak")
        return {"verdicts": found, "verdict": overall} | charted


PRINTERS: dict[str, Callable[[Report, Scenario, Legs], Any]] = {
    "row": Report.row,
    "edge": Report.edge,
    "paced": Report.paced,
    "mix": Report.mix,
    "sweep": Report.sweep,
    "soak": Report.soak,
}


def cpu_line(cpu: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in cpu.items())


def cpu_cell(step: Mapping[str, Any]) -> str:
    """`gateway 150 (98+52; conns 5+3), postgres 20, client 60`: for a server with
    several worker processes, each one's CPU and the connections the kernel
    gave it (SO_REUSEPORT places connections, not calls)."""
    parts = []
    for name, total in step["cpu_percent"].items():
        workers = [p for p in step["processes"][name] if p["listens"]]
        part = f"{name} {total:.0f}"
        if name in ("echo", "gateway") and len(workers) > 1:
            cpu = "+".join(f"{p['cpu_percent']:.0f}" for p in workers)
            part += f" ({cpu}; conns {'+'.join(str(p['connections']) for p in workers)})"
        parts.append(part)
    return ", ".join(parts)


def mix_table(step: Mapping[str, Any], weights: Mapping[str, int]) -> list[str]:
    """Per RPC: share, count, RPS, percentiles, errors by code; then all of them."""
    total = sum(weights.values())
    lines = [
        f"{'rpc':<11} {'weight':>6} {'calls':>6} {'rps':>6} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7}  errors"
    ]
    rows = [(name, f"{100 * weights[name] / total:.0f}%", step["rpcs"][name]) for name in weights]
    for name, share, found in [*rows, ("all", "", step)]:
        lines.append(
            f"{name:<11} {share:>6} {found['calls']:>6} {found['rps']:>6.0f} "
            f"{ms(found['p50_ms']):>7} {ms(found['p90_ms']):>7} {ms(found['p99_ms']):>7}"
            f"  {codes(found['error_codes'])}"
        )
    return [*lines, f"cpu % of one core: {cpu_line(step['cpu_percent'])}"]


# --- the soak ------------------------------------------------------------------------


def soak_table(samples: Sequence[Mapping[str, Any]], buckets: Sequence[Any]) -> list[str]:
    if not samples:
        return ["(no samples)"]
    names = list(samples[0]["rss_mb"])
    width = 9 * len(names) - 1
    columns = " ".join(f"{name.removeprefix('rust_')[:8]:>8}" for name in names)
    lines = [
        f"{'':>5}  {'RSS MB':^{width}}  {'private MB':^{width}}  {'TCP+Unix conns':^{width}}  "
        f"{'last 5 s':^13}",
        f"{'t s':>5}  {columns}  {columns}  {columns}  {'rps':>5} {'p99 ms':>7}",
    ]
    for s in samples:
        done = [b for b in buckets if b["t_s"] + b["seconds"] <= s["t_s"] + 0.5]
        rps, p99 = (f"{done[-1]['rps']:.0f}", ms(done[-1]["p99_ms"])) if done else ("-", "-")
        lines.append(
            f"{s['t_s']:>5.0f}  "
            + "  ".join(
                " ".join(f"{value:>8.1f}" for value in series)
                for series in (
                    [s["rss_mb"][n] for n in names],
                    [s["private_mb"][n] for n in names],
                )
            )
            + "  "
            + " ".join(f"{s['connections'][n] + s['unix'][n]:>8.0f}" for n in names)
            + f"  {rps:>5} {p99:>7}"
        )
    return lines


def verdicts(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per component and measure: the mean of the last third over the mean of
    the first third, and whether that is flat (under 10%)."""
    found: dict[str, dict[str, Any]] = {}
    if len(samples) < 3:
        return found
    third = len(samples) // 3
    for measure in ("rss_mb", "private_mb", "connections", "unix"):
        for name in samples[0][measure]:
            values = [s[measure][name] for s in samples]
            first, last = sum(values[:third]) / third, sum(values[-third:]) / third
            change = (last / first - 1) if first else (0.0 if last == 0 else math.inf)
            # A handful of connections moving by one or two is not a leak.
            steady = measure in ("connections", "unix") and abs(values[-1] - values[0]) <= 2
            found[f"{name} {measure}"] = {
                "growth_percent": 100 * change if math.isfinite(change) else None,
                "first": values[0],
                "last": values[-1],
                "flat": abs(change) < FLAT_GROWTH or steady,
            }
    return found


def verdict_line(found: Mapping[str, Mapping[str, Any]]) -> str:
    """Which series grew by 10% or more. RSS counts shared pages too (PostgreSQL's
    shared buffers, touched by more backends over time), so a grown RSS with
    flat private memory says so."""
    if not found:
        return "too short to judge (fewer than 3 samples)"
    grown = []
    for measure, verdict in found.items():
        name, _, kind = measure.rpartition(" ")
        if verdict["flat"]:
            continue
        if kind == "rss_mb" and found[f"{name} private_mb"]["flat"]:
            grown.append(f"{name} RSS (shared pages only; private memory flat)")
        else:
            words = {"rss_mb": "RSS", "private_mb": "private memory", "unix": "Unix sockets"}
            grown.append(f"{name} {words.get(kind, kind)}")
    if not grown:
        return "flat: RSS, private memory and connections of every part within 10%"
    return "growth of 10% or more in: " + "; ".join(grown)
