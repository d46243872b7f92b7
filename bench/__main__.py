"""`python -m bench`: the scenarios chosen, run one after the other against one
stack, printed, and saved to bench/results/ (bench/README.md)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from bench import runner
from bench.report import Report, say
from bench.scenarios import BY_NAME, MIX, SCENARIOS, SOAK
from bench.stack import Stack, StackFailure
from deploy.settings import REPO

DEFAULT_MIX_WEIGHTS = "Login=5,ListPosts=60,GetPost=20,CreatePost=10,Analyze=5"
DEFAULT_RATES = "100,200,300,400,500,600,800"


def mix_weights(text: str) -> dict[str, int]:
    weights = {
        name.strip(): int(value) for name, _, value in (i.partition("=") for i in text.split(","))
    }
    if not weights.keys() <= {call.name for call in MIX}:
        raise argparse.ArgumentTypeError(f"not RPCs of the mix: {', '.join(weights)}")
    if min(weights.values()) < 0 or not sum(weights.values()):
        raise argparse.ArgumentTypeError("weights are whole numbers >= 0, not all 0")
    return {name: weight for name, weight in weights.items() if weight}


def rates(text: str) -> list[float]:
    return [float(item) for item in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--duration", type=float, default=5.0, help="measured seconds per scenario (5)")
    add("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    add("--concurrency", type=int, default=32, help="calls in flight, all but Login (32)")
    add("--login-concurrency", type=int, default=8, help="calls in flight for Login (8)")
    add("--channels", type=int, default=8, help="connections the client spreads its calls over (8)")
    add(
        "--no-balance",
        dest="balance",
        action="store_false",
        help="leave the client's connections where the kernel puts them, instead of giving "
        "each server worker the same number (direct closed-loop scenarios)",
    )
    add(
        "--workers",
        type=int,
        default=int(os.environ.get("NUELL_WORKERS") or os.cpu_count() or 1),
        help="processes of py_gateway (NUELL_WORKERS) and of the echo server alike "
        "(NUELL_WORKERS, else one per core, the gateway's own default)",
    )
    add(
        "--only",
        action="append",
        choices=list(BY_NAME),
        metavar="NAME",
        help=f"run only this scenario (repeatable; default all): {', '.join(BY_NAME)}",
    )
    add("--paced-rate", type=float, default=1000.0, help="get-post-paced's calls/s (1000)")
    add("--edge-rounds", type=int, default=6, help="edge-cost's rounds, each path once (6)")
    add("--edge-duration", type=float, default=3.0, help="edge-cost's seconds per leg (3)")
    mix = parser.add_argument_group("the mix through Envoy (mix-envoy, sweep-envoy, --soak)")
    add = mix.add_argument
    add(
        "--mix-weights",
        type=mix_weights,
        default=mix_weights(DEFAULT_MIX_WEIGHTS),
        help=DEFAULT_MIX_WEIGHTS,
    )
    add("--seed", type=int, default=1, help="the mix's RNG seed (1)")
    add("--mix-duration", type=float, default=10.0, help="measured seconds, closed loop (10)")
    add("--mix-concurrency", type=int, default=32, help="calls in flight, closed loop (32)")
    add(
        "--rates",
        type=rates,
        default=rates(DEFAULT_RATES),
        help=f"the sweep's calls/s ({DEFAULT_RATES})",
    )
    add("--step-duration", type=float, default=5.0, help="seconds per offered load (5)")
    add("--mix-timeout", type=float, default=5.0, help="deadline of each mix call, seconds (5)")
    add(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="the mix at --soak-rate for this long, sampling memory and connections "
        "(default off); alone unless --only names other scenarios",
    )
    add("--soak-rate", type=float, default=100.0, help="calls/s during the soak (100)")
    args = parser.parse_args(argv)
    positive = (
        "duration",
        "edge_duration",
        "mix_duration",
        "step_duration",
        "paced_rate",
        "soak_rate",
    )
    whole = (
        "concurrency",
        "login_concurrency",
        "channels",
        "workers",
        "edge_rounds",
        "mix_concurrency",
    )
    if min(getattr(args, name) for name in positive + whole) <= 0 or min(args.rates) <= 0:
        parser.error(f"these must be above 0: {', '.join(positive + whole)}, --rates")
    if args.warmup < 0 or args.soak < 0:
        parser.error("--warmup and --soak must not be negative")
    return args


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    chosen = [BY_NAME[name] for name in dict.fromkeys(args.only or [])]
    if not args.only and not args.soak:
        chosen = list(SCENARIOS)
    chosen += [SOAK] if args.soak else []
    # Explicitly, SIGINT too: a shell starting us in the background ignores it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    work_dir = Path(tempfile.mkdtemp(prefix="nuell-bench-"))
    stack = Stack(args.workers, work_dir)
    failed = True
    try:
        stack.prepare([target for scenario in chosen for target in scenario.targets])
        report = Report(args, stack)
        for scenario in chosen:
            report.add(scenario, runner.run(scenario, stack, args))
        path = report.save()
        failed = False
    except KeyboardInterrupt:
        failed = False
        say("\ninterrupted; stopping everything")
        return 130
    except StackFailure as exc:
        print(f"bench: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # stopping is not to be interrupted
        stack.close()
        if failed:
            print(f"bench: logs kept in {work_dir}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    say(f"\nsaved {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
