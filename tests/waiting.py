"""Waiting, in async tests, for something the server or a client does on its own time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_INTERVAL = 0.05


async def until(condition: Callable[[], object], what: str | Callable[[], str], *,
                timeout: float = 5.0) -> None:
    """Return once `condition()` is true; fail if it is not within `timeout` s.

    `what` says what was awaited, for the failure message: a string, or a
    function giving one when the wait fails (to show the state reached, e.g.
    "sessions 0, now 3"). The condition is checked once more at the deadline,
    so a loop starved by a loaded machine fails on what it sees, not on a
    missed last poll.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            if condition():
                return
            described = what() if callable(what) else what
            raise AssertionError(f"waited {timeout:g} s for {described}; it did not happen")
        await asyncio.sleep(POLL_INTERVAL)
