"""PNG charts of the mix's offered-load sweep and of the soak (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

Rows = Sequence[Mapping[str, Any]]


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _save(figure: Any, axis: Any, title: str, path: Path) -> Path:
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def latency_chart(steps: Rows, title: str, path: Path) -> Path:
    """p50 and p99 (log scale) and achieved RPS against offered load."""
    offered = [step["offered_rps"] for step in steps]
    figure, latency = plt.subplots(figsize=(8, 5), dpi=110)
    for key, style in (("p50", "o-"), ("p99", "s-")):
        latency.plot(offered, [_nan(s[f"{key}_ms"]) for s in steps], style, label=f"{key} latency")
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
    return _save(figure, latency, title, path)


def soak_chart(samples: Rows, buckets: Rows, title: str, path: Path) -> Path:
    """Memory and connections per process tree, and latency, over the soak."""
    figure, (rss, conns, latency) = plt.subplots(3, 1, figsize=(8, 9), dpi=110, sharex=True)
    t = [sample["t_s"] for sample in samples]
    for name in samples[0]["rss_mb"] if samples else ():
        (line,) = rss.plot(t, [s["rss_mb"][name] for s in samples], "o-", label=f"{name} RSS")
        private = [s["private_mb"][name] for s in samples]
        rss.plot(t, private, "--", color=line.get_color(), label=f"{name} private")
        conns.plot(t, [s["connections"][name] for s in samples], "o-", label=name)
    middle = [bucket["t_s"] + bucket["seconds"] / 2 for bucket in buckets]
    for key in ("p50", "p99"):
        latency.plot(middle, [_nan(b[f"{key}_ms"]) for b in buckets], "o-", label=key)
    rss.set_ylabel("MB per process tree\n(solid RSS, dashed private)")
    conns.set_ylabel("open TCP + Unix\nconnections")
    latency.set(ylabel="latency (ms)", xlabel="seconds into the soak")
    for axis in (rss, conns, latency):
        axis.legend(loc="upper left", fontsize=8)
        axis.grid(True, alpha=0.3)
        axis.set_ylim(bottom=0)
    return _save(figure, rss, title, path)
