"""Tables and verdicts for the mix's runs (bench/mix.py), and the soak's
resource samples: memory and TCP connections of each part of the stack."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psutil

P99_TARGET_MS = 100.0
MAX_ERROR_SHARE = 0.01  # a rate "holds" with p99 under target and under 1% errors
FLAT_GROWTH = 0.10  # first third to last third, relative
MEASURES = ("rss_mb", "private_mb", "connections", "unix")


def ms(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"


def codes(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{code} {count}" for code, count in errors.items()) or "-"


def cpu_line(cpu: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in cpu.items())


def mix_table(step: Mapping[str, Any], weights: Mapping[str, int]) -> list[str]:
    """Per RPC: share, count, RPS, percentiles, errors by code; then all of them."""
    total = sum(weights.values())
    lines = [
        f"{'rpc':<11} {'weight':>6} {'calls':>6} {'rps':>6} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7}  errors"
    ]
    rows = [(name, f"{100 * weights[name] / total:.0f}%", step["rpcs"][name]) for name in weights]
    rows.append(("all", "", step))
    for name, share, figures in rows:
        lines.append(
            f"{name:<11} {share:>6} {figures['calls']:>6} {figures['rps']:>6.0f} "
            f"{ms(figures['p50_ms']):>7} {ms(figures['p90_ms']):>7} {ms(figures['p99_ms']):>7}"
            f"  {codes(figures['error_codes'])}"
        )
    lines.append(f"cpu % of one core: {cpu_line(step['cpu'])}")
    return lines


def holds(step: Mapping[str, Any]) -> bool:
    p99 = step["p99_ms"]
    calls = step["calls"] + step["refused_in_client"]
    return (
        p99 is not None
        and math.isfinite(p99)
        and p99 < P99_TARGET_MS
        and (step["errors"] + step["refused_in_client"]) <= MAX_ERROR_SHARE * calls
    )


def sweep_table(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        f"{'offered':>7} {'achieved':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>8} "
        f"{'errors':>6} {'lag ms':>6}  cpu % of one core; errors by code"
    ]
    for step in steps:
        errors = step["errors"] + step["refused_in_client"]
        by_code = dict(step["error_codes"])
        if step["refused_in_client"]:
            by_code["not sent (client queue full)"] = step["refused_in_client"]
        lines.append(
            f"{step['offered_rps']:>7.0f} {step['achieved_rps']:>8.0f} {ms(step['p50_ms']):>7} "
            f"{ms(step['p90_ms']):>7} {ms(step['p99_ms']):>8} {errors:>6} "
            f"{ms(step['send_lag_p99_ms']):>6}  {cpu_line(step['cpu'])}"
            + (f"; {codes(by_code)}" if by_code else "")
        )
    return lines


def largest_holding(steps: Sequence[Mapping[str, Any]]) -> float | None:
    """The largest offered rate at which p99 < 100 ms with under 1% errors."""
    good = [step["offered_rps"] for step in steps if holds(step)]
    return max(good) if good else None


# --- the soak's samples ---------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def sample(components: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """Per process tree: RSS and private memory (RSS less shared pages) in MB,
    summed over its processes; open TCP connections (any state but LISTEN,
    each counted once per tree); and open Unix sockets (how the embedded
    PostgreSQL is reached)."""
    rss: dict[str, float] = {}
    private: dict[str, float] = {}
    connections: dict[str, float] = {}
    unix: dict[str, float] = {}
    for name, pid in components.items():
        total = shared = 0
        seen: set[tuple[Any, Any]] = set()
        sockets = 0
        for process in tree(pid):
            try:
                memory = process.memory_info()
                total += memory.rss
                shared += getattr(memory, "shared", 0)
                for c in process.net_connections(kind="tcp"):
                    if c.status != psutil.CONN_LISTEN:
                        seen.add((c.laddr, c.raddr))
                sockets += len(process.net_connections(kind="unix"))
            except psutil.Error:  # exited between listing and reading
                continue
        rss[name] = total / 2**20
        private[name] = (total - shared) / 2**20
        connections[name] = len(seen)
        unix[name] = sockets
    return {"rss_mb": rss, "private_mb": private, "connections": connections, "unix": unix}


def growth(values: Sequence[float]) -> float:
    """Mean of the last third over mean of the first third, minus one."""
    third = max(1, len(values) // 3)
    first = sum(values[:third]) / third
    last = sum(values[-third:]) / third
    if first == 0:
        return 0.0 if last == 0 else math.inf
    return last / first - 1


def verdicts(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per component and measure: growth and whether it is flat (< 10%)."""
    out: dict[str, dict[str, Any]] = {}
    if len(samples) < 3:
        return out
    for measure in MEASURES:
        for name in samples[0][measure]:
            values = [s[measure][name] for s in samples]
            change = growth(values)
            flat = abs(change) < FLAT_GROWTH
            # A handful of connections moving by one or two is not a leak.
            if measure in ("connections", "unix") and abs(values[-1] - values[0]) <= 2:
                flat = True
            out[f"{name} {measure}"] = {
                "growth_percent": 100 * change if math.isfinite(change) else None,
                "first": values[0],
                "last": values[-1],
                "flat": flat,
            }
    return out


def overall(found: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: which series grew by 10% or more from the first to the last third.
    RSS counts shared pages too (PostgreSQL's shared buffers, touched by more
    backends over time), so a grown RSS with flat private memory says so."""
    if not found:
        return "too short to judge (fewer than 3 samples)"
    grown = []
    for measure, verdict in found.items():
        if verdict["flat"] or measure.endswith(" private_mb"):
            continue
        name = measure.rsplit(" ", 1)[0]
        if measure.endswith(" rss_mb") and found[f"{name} private_mb"]["flat"]:
            grown.append(f"{name} RSS (shared pages only; private memory flat)")
        else:
            grown.append(measure.replace("rss_mb", "RSS").replace("unix", "Unix sockets"))
    grown += [
        measure.replace("private_mb", "private memory")
        for measure, verdict in found.items()
        if measure.endswith(" private_mb") and not verdict["flat"]
    ]
    if not grown:
        return "flat: RSS, private memory and connections of every part within 10%"
    return "growth of 10% or more in: " + "; ".join(grown)


def soak_table(samples: Sequence[Mapping[str, Any]], buckets: Sequence[Any]) -> list[str]:
    if not samples:
        return ["(no samples)"]
    names = list(samples[0]["rss_mb"])
    short = {n: SHORT.get(n, n[:8]) for n in names}
    head = f"{'t s':>5}  " + " ".join(f"{short[n]:>8}" for n in names)
    head += "  " + " ".join(f"{short[n]:>8}" for n in names)
    head += "  " + " ".join(f"{short[n]:>8}" for n in names)
    head += f"  {'rps':>5} {'p99 ms':>7}"
    over = f"{'':>5}  {'RSS MB':^{9 * len(names) - 1}}  {'private MB':^{9 * len(names) - 1}}"
    over += f"  {'TCP+Unix conns':^{9 * len(names) - 1}}  {'last 5 s':^13}"
    lines = [over, head]
    for s in samples:
        latest = latest_bucket(buckets, s["t_s"])
        lines.append(
            f"{s['t_s']:>5.0f}  "
            + " ".join(f"{s['rss_mb'][n]:>8.1f}" for n in names)
            + "  "
            + " ".join(f"{s['private_mb'][n]:>8.1f}" for n in names)
            + "  "
            + " ".join(f"{s['connections'][n] + s['unix'][n]:>8.0f}" for n in names)
            + f"  {latest('rps'):>5} {latest('p99_ms'):>7}"
        )
    return lines


SHORT = {"rust_compute": "compute", "postgres": "postgres", "gateway": "gateway"}


def latest_bucket(buckets: Sequence[Any], t: float) -> Callable[[str], str]:
    """The figures of the last bucket ending by `t` seconds, as text."""
    done = [b for b in buckets if b["t_s"] + b["seconds"] <= t + 0.5]

    def get(key: str) -> str:
        if not done:
            return "-"
        value = done[-1][key]
        return f"{value:.0f}" if key == "rps" else ms(value)

    return get
