"""One scenario: its services up, one checked call per RPC, then the load driver
(bench/driver.py) in a process of its own once per target and round."""

import argparse
import itertools
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor, wait
from typing import Any

import grpc  # type: ignore[import-untyped]

from bench import driver
from bench.scenarios import Scenario, loads
from bench.stack import BenchError, Stack


def run(scenario: Scenario, stack: Stack, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every leg's figures in the order run: each round takes each target in
    turn, every other round the other way, so the machine's drift falls on both."""
    load = loads(args)[scenario.load]
    legs = []
    with stack.serving(scenario.targets):
        for target in scenario.targets:
            check(scenario, stack, target)
        for n in range(load.rounds):
            for target in scenario.targets[:: -1 if n % 2 else 1]:
                balance = stack.balance_over(target) if args.balance else None
                where, watch = stack.addresses[target], stack.watch(target)
                plan = driver.Plan(where, scenario.calls, load, stack.fixture, watch, balance)
                legs.append({"via": target} | drive(plan))
    return legs


def check(scenario: Scenario, stack: Stack, target: str) -> None:
    """One call of each RPC before the load: a broken scenario fails with a
    message instead of a row of errors."""
    bearer = (("authorization", f"Bearer {stack.fixture.access_token}"),)
    with grpc.insecure_channel(stack.addresses[target]) as channel:
        for call in scenario.calls:
            request = next(call.requests(stack.fixture, random.Random(0)))  # noqa: S311
            metadata = bearer if call.authorized else ()
            try:
                if call.opener and call.chain:
                    opener = call.opener.requests(stack.fixture, random.Random(0))  # noqa: S311
                    request = call.chain(channel.unary_unary(call.opener.method)(next(opener)))
                channel.unary_unary(call.method)(request, metadata=metadata, timeout=30)
            except grpc.RpcError as exc:
                raise BenchError(
                    f"{scenario.label}: {call.name} via {target} failed: "
                    f"{exc.code().name}: {exc.details()}"
                ) from None


def drive(plan: driver.Plan) -> dict[str, Any]:
    """The driver's figures, with the stack's memory every `bucket` seconds if any."""
    load, samples = plan.load, []
    # spawn, not fork: grpc's threads do not survive a fork.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future, begin = pool.submit(driver.main, plan), time.monotonic() + load.warmup + 0.5
        for t in itertools.count(0, load.bucket) if load.bucket else ():
            if t > load.duration or wait([future], begin + t - time.monotonic()).done:
                break
            samples.append({"t_s": t} | driver.memory(plan.watch))
        result: dict[str, Any] = future.result()
    return result | ({"samples": samples} if load.bucket else {})
