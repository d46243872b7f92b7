"""Background loops that catch errors must still stop when they are cancelled.

A cancellation that arrives in the middle of a query reaches psycopg, which
cancels the query on the server and may raise an error of its own: a loop's
`except` then takes the stop for a passing failure, sleeps and goes on, and a
gateway that is stopping awaits that task forever (seen as test runs hanging
in a gateway's `stop`). Every such `except` in a loop calls
`reraise_if_cancelled()` first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

logger = logging.getLogger(__name__)


def reraise_if_cancelled() -> None:
    """Raise CancelledError if the current task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


STOP_TASKS_SECONDS = 5.0


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait for them, at most STOP_TASKS_SECONDS.

    Bounded: a task that swallowed its cancellation must not hold a stop
    forever; it is logged instead.
    """
    for task in tasks:
        task.cancel()
    if not tasks:  # asyncio.wait refuses an empty collection
        return
    _, stuck = await asyncio.wait(tasks, timeout=STOP_TASKS_SECONDS)
    for task in stuck:
        logger.error("background task %s did not stop", task.get_name())
