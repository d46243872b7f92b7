"""PNG charts of the mix's load sweep and soak (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

P99_TARGET_MS = 100.0


def latency_chart(steps: Sequence[Mapping[str, Any]], title: str, path: Path) -> Path:
    """p50 and p99 (log scale) and achieved RPS against offered load."""
    offered = [step["offered_rps"] for step in steps]
    figure, latency = plt.subplots(figsize=(8, 5), dpi=110)
    for key, label, style in (("p50_ms", "p50", "o-"), ("p99_ms", "p99", "s-")):
        values = [step[key] if step[key] is not None else float("nan") for step in steps]
        latency.plot(offered, values, style, label=f"{label} latency")
    latency.axhline(P99_TARGET_MS, color="grey", linestyle=":", label="100 ms")
    latency.set_yscale("log")
    latency.set_xlabel("offered load (calls/s)")
    latency.set_ylabel("latency (ms, log scale)")
    achieved = latency.twinx()
    achieved.plot(offered, [s["rps"] for s in steps], "^--", color="tab:green")
    achieved.plot(offered, offered, ":", color="tab:green", alpha=0.4)
    achieved.set_ylabel("achieved calls/s (dotted: = offered)", color="tab:green")
    achieved.set_ylim(0, max(offered) * 1.1)
    lines, labels = latency.get_legend_handles_labels()
    latency.legend([*lines, achieved.lines[0]], [*labels, "achieved RPS"], loc="upper left")
    latency.set_title(title, fontsize=10)
    latency.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def soak_chart(
    samples: Sequence[Mapping[str, Any]],
    buckets: Sequence[Mapping[str, Any]],
    title: str,
    path: Path,
) -> Path:
    """RSS and TCP connections per component, and latency, over the soak."""
    figure, (rss, conns, latency) = plt.subplots(3, 1, figsize=(8, 9), dpi=110, sharex=True)
    t = [sample["t_s"] for sample in samples]
    names = list(samples[0]["rss_mb"]) if samples else []
    for name in names:
        (line,) = rss.plot(t, [s["rss_mb"][name] for s in samples], "o-", label=f"{name} RSS")
        rss.plot(
            t,
            [s["private_mb"][name] for s in samples],
            "--",
            color=line.get_color(),
            label=f"{name} private",
        )
        conns.plot(t, [s["connections"][name] for s in samples], "o-", label=name)
    rss.set_ylabel("MB per process tree\n(solid RSS, dashed private)")
    conns.set_ylabel("open TCP + Unix\nconnections")
    for axis in (rss, conns):
        axis.legend(loc="upper left", fontsize=8)
        axis.grid(True, alpha=0.3)
        axis.set_ylim(bottom=0)
    mid = [bucket["t_s"] + bucket["seconds"] / 2 for bucket in buckets]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        values = [b[key] if b[key] is not None else float("nan") for b in buckets]
        latency.plot(mid, values, "o-", label=label)
    latency.set_ylabel("latency (ms)")
    latency.set_xlabel("seconds into the soak")
    latency.legend(loc="upper left", fontsize=8)
    latency.grid(True, alpha=0.3)
    latency.set_ylim(bottom=0)
    rss.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
