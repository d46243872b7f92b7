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


def reraise_if_cancelled() -> None:
    """Raise CancelledError if the current task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
