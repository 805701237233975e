"""``run_on_loop``: a function run on an event loop's thread for a waiting thread, or in
that thread when the loop does not take it in time, exactly once either way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from tasklease.core.handoff import run_on_loop


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, stopped and closed afterwards."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, name="test-loop", daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.call_soon_threadsafe(running.stop)
        thread.join(5)
        running.close()


def test_the_function_runs_on_the_loop_thread_and_its_result_comes_back(
    loop: asyncio.AbstractEventLoop,
) -> None:
    result, on_loop = run_on_loop(loop, lambda: threading.current_thread().name, patience=5)
    assert (result, on_loop) == ("test-loop", True)


def test_what_the_function_raises_is_raised_in_the_waiting_thread(
    loop: asyncio.AbstractEventLoop,
) -> None:
    def fails() -> None:
        raise ValueError("from the loop")

    with pytest.raises(ValueError, match="from the loop"):
        run_on_loop(loop, fails, patience=5)
    # The loop itself is unharmed.
    assert run_on_loop(loop, lambda: 7, patience=5) == (7, True)


def test_a_blocked_loop_is_given_up_on_and_the_function_runs_once_here(
    loop: asyncio.AbstractEventLoop,
) -> None:
    release = threading.Event()
    blocked = threading.Event()

    def block() -> None:  # a loop stuck in a synchronous wait
        blocked.set()
        release.wait(10)

    loop.call_soon_threadsafe(block)
    if not blocked.wait(5):
        pytest.fail("the loop did not start the blocking call")
    runs: list[str] = []
    result, on_loop = run_on_loop(
        loop, lambda: runs.append(threading.current_thread().name) or len(runs), patience=0.05
    )
    assert (result, on_loop) == (1, False)
    assert runs == [threading.current_thread().name]
    release.set()
    # The loop reaches the handed-off call late and finds it taken: it does not run again.
    assert run_on_loop(loop, lambda: "after", patience=5) == ("after", True)
    assert runs == [threading.current_thread().name]


def test_a_closed_loop_runs_the_function_here_at_once() -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    assert run_on_loop(closed, lambda: threading.current_thread().name, patience=60) == (
        threading.current_thread().name,
        False,
    )


def test_a_stopped_loop_is_given_up_on_after_its_patience() -> None:
    stopped = asyncio.new_event_loop()  # never run: a stopped loop's queue is not served
    try:
        runs: list[int] = []
        assert run_on_loop(stopped, lambda: runs.append(1) or "here", patience=0.05) == (
            "here",
            False,
        )
        stopped.run_until_complete(asyncio.sleep(0))  # its late turn: nothing runs again
        assert runs == [1]
    finally:
        stopped.close()
