"""Runs one scenario: its services up, one checked call per RPC, then the load
driver once per target and round, in a process of its own (bench/driver.py);
the soak's memory and connections sampled while it runs."""

from __future__ import annotations

import argparse
import multiprocessing
import random
import time
from typing import Any

import grpc  # type: ignore[import-untyped]

from bench import driver
from bench.scenarios import Scenario, loads
from bench.stack import BenchError, Stack


def run(scenario: Scenario, stack: Stack, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every leg's figures, in the order run: for each round, each target in
    turn (every other round the other way round, so drift falls on both)."""
    load = loads(args)[scenario.load]
    calls = tuple(c for c in scenario.calls if not load.weights or load.weights.get(c.name))
    legs = []
    with stack.serving(scenario.targets):
        for target in scenario.targets:
            check(scenario, stack, target)
        for n in range(load.rounds):
            for target in scenario.targets[:: 1 if n % 2 == 0 else -1]:
                plan = driver.Plan(
                    target=stack.address(target),
                    calls=calls,
                    load=load,
                    fixture=stack.fixture,
                    watch=stack.watch(target),
                    channels=args.channels,
                    seed=args.seed,
                    balance_over=stack.balance_over(target)
                    if args.balance and load.concurrency
                    else None,
                )
                legs.append({"via": target} | drive(scenario, plan))
    return legs


def check(scenario: Scenario, stack: Stack, target: str) -> None:
    """One call of each RPC before the load, so a broken scenario fails
    loudly instead of as a row of errors."""
    bearer = (("authorization", f"Bearer {stack.fixture.access_token}"),)
    with grpc.insecure_channel(stack.address(target)) as channel:
        for call in scenario.calls:
            request = next(call.requests(stack.fixture, random.Random(0)))  # noqa: S311
            try:
                channel.unary_unary(call.method)(
                    request, metadata=bearer if call.authorized else (), timeout=30
                )
            except grpc.RpcError as exc:
                raise BenchError(
                    f"{scenario.label}: {call.name} via {target} failed: "
                    f"{exc.code().name}: {exc.details()}"
                ) from None


def drive(scenario: Scenario, plan: driver.Plan) -> dict[str, Any]:
    """The driver's figures, and with a bucketed load the stack's memory and
    connections every `bucket` seconds of the measured part."""
    load = plan.load
    spawn = multiprocessing.get_context("spawn")  # grpc's threads do not survive a fork
    results, sender = spawn.Pipe(duplex=False)
    process = spawn.Process(target=driver.main, args=(plan, sender), daemon=True)
    process.start()
    begin = time.monotonic()
    steps = max(1, len(load.rates))
    deadline = begin + load.warmup + steps * (load.duration + load.pause + load.timeout) + 60
    next_sample = load.warmup + 0.5
    samples: list[dict[str, Any]] = []
    try:
        while not results.poll(0.1):
            now = time.monotonic() - begin
            if not process.is_alive() and not results.poll():
                raise BenchError(f"{scenario.label}: the load driver died ({process.exitcode})")
            if time.monotonic() > deadline:
                raise BenchError(f"{scenario.label}: the load driver did not finish in time")
            if load.bucket and now >= next_sample and now < load.warmup + load.duration:
                t_s = next_sample - load.warmup - 0.5
                samples.append({"t_s": t_s} | driver.memory(plan.watch))
                next_sample += load.bucket
        result: dict[str, Any] = results.recv()
    finally:
        process.terminate()
        process.join()
    return result | ({"samples": samples} if load.bucket else {})
