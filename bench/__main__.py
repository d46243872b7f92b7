"""`python -m bench`: the chosen scenarios, one after the other against one
stack, printed and saved to bench/results/ (bench/README.md)."""

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from bench import near_duplicates, runner, watch
from bench.report import Report, say
from bench.scenarios import BY_NAME, MIX, SCENARIOS, SOAK
from bench.stack import Stack, StackFailure
from deploy.settings import REPO

# Scenarios that time calls of their own rather than drive a load.
OWN_RUNS = {"near-duplicates": near_duplicates.run, "watch": watch.run}
MIX_WEIGHTS = "Login=5,ListPosts=60,GetPost=20,CreatePost=10,Analyze=5"
RATES = "100,200,300,400,500,600,800"
WORKERS = int(os.environ.get("NUELL_WORKERS") or os.cpu_count() or 1)  # the gateway's default
# flag, default, what it is: each must be above 0, but --warmup and --soak (0: off)
OPTIONS = (
    ("--duration", 5.0, "measured seconds per scenario"),
    ("--warmup", 1.0, "unmeasured seconds first"),
    ("--concurrency", 32, "calls in flight, closed loop, all but Login"),
    ("--login-concurrency", 8, "calls in flight for Login"),
    ("--channels", 8, "connections the client spreads its calls over"),
    ("--workers", WORKERS, "processes of py_gateway and of the echo server (NUELL_WORKERS)"),
    ("--paced-rate", 1000.0, "get-post-paced's calls/s"),
    ("--edge-rounds", 6, "edge-cost's rounds, each taking both paths"),
    ("--edge-duration", 3.0, "edge-cost's measured seconds per path and round"),
    ("--seed", 1, "the mix's RNG seed"),
    ("--mix-duration", 10.0, "mix-envoy's measured seconds"),
    ("--mix-concurrency", 32, "mix-envoy's calls in flight"),
    ("--step-duration", 5.0, "sweep-envoy's seconds per offered load"),
    ("--mix-timeout", 5.0, "the deadline of each call of the mix and of get-post-paced, s"),
    ("--soak", 0.0, "seconds of the mix at --soak-rate, sampling memory (alone unless --only)"),
    ("--soak-rate", 100.0, "the soak's calls/s"),
)  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="End-to-end load runs against the real stack (bench/README.md).",
    )
    for flag, default, text in OPTIONS:
        parser.add_argument(
            flag, type=type(default), default=default, metavar="N", help=f"{text} ({default:g})"
        )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BY_NAME),
        metavar="NAME",
        help=f"run only this scenario (repeatable; default all): {', '.join(BY_NAME)}",
    )
    balance = "leave the client's connections where the kernel puts them (bench/README.md)"
    parser.add_argument("--no-balance", dest="balance", action="store_false", help=balance)
    parser.add_argument("--mix-weights", default=MIX_WEIGHTS, help=f"({MIX_WEIGHTS})")
    parser.add_argument("--rates", default=RATES, help=f"sweep-envoy's calls/s ({RATES})")
    args = parser.parse_args()
    try:
        pairs = (item.partition("=") for item in args.mix_weights.split(","))
        weights = {name.strip(): int(weight) for name, _, weight in pairs}
        args.rates = [float(rate) for rate in args.rates.split(",")]
    except ValueError as exc:
        parser.error(f"--mix-weights or --rates: {exc}")
    names = [call.name for call in MIX]
    if not (weights.keys() <= set(names) and min(weights.values()) >= 0 < sum(weights.values())):
        parser.error(f"--mix-weights: whole numbers >= 0 for {', '.join(names)}, not all 0")
    if min(args.rates) <= 0:
        parser.error("--rates: calls/s above 0")
    args.mix_weights = {name: weight for name, weight in weights.items() if weight}
    for flag, _, _ in OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value < 0 or (value == 0 and flag not in ("--warmup", "--soak")):
            parser.error(f"{flag} must be above 0")
    return args


def main() -> int:
    args = parse_args()
    chosen = [BY_NAME[name] for name in dict.fromkeys(args.only or [])]
    chosen = (chosen or ([] if args.soak else list(SCENARIOS))) + ([SOAK] if args.soak else [])
    # Explicitly, SIGINT too: a shell starting us in the background ignores it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    work_dir = Path(tempfile.mkdtemp(prefix="nuell-bench-"))
    stack, failed = Stack(args.workers, work_dir), True
    try:
        stack.prepare([target for scenario in chosen for target in scenario.targets])
        report = Report(args, stack)
        for scenario in chosen:
            if own := OWN_RUNS.get(scenario.name):
                report.figures[scenario.name] = own(stack)
            else:
                report.add(scenario, runner.run(scenario, stack, args))
        path, failed = report.save(), False
    except KeyboardInterrupt:
        say("\ninterrupted; stopping everything")
        failed = False
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
