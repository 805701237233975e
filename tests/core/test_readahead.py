"""core.readahead: a first half run again after each read it needs, fetched by the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tasklease.core import readahead
from tasklease.core.audit import deferring
from tasklease.core.errors import NotFound


class Reads:
    """A fake store's reads: ``answers`` by query, every fetch counted."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.fetched: list[str] = []

    async def fetch(self, query: object) -> Any:
        assert isinstance(query, str)
        self.fetched.append(query)
        answer = self.answers[query]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_each_read_is_fetched_once_and_the_first_half_run_again_with_it() -> None:
    reads = Reads({"agent": "a-1", "session": "s-1"})
    runs: list[int] = []

    def first_half() -> str:
        runs.append(1)
        agent = readahead.answer("agent")
        session = readahead.answer("session")
        return f"{agent}/{session}"

    assert asyncio.run(readahead.run(first_half, reads.fetch)) == "a-1/s-1"
    assert reads.fetched == ["agent", "session"]
    assert len(runs) == 3  # stopped at each read, then completed
    assert not readahead.active()


def test_what_a_read_raises_is_raised_where_the_first_half_reads() -> None:
    reads = Reads({"agent": NotFound("no such agent")})

    def first_half() -> str:
        try:
            readahead.answer("agent")
        except NotFound as exc:
            return f"refused: {exc.detail}"
        return "found"

    assert asyncio.run(readahead.run(first_half, reads.fetch)) == "refused: no such agent"
    assert reads.fetched == ["agent"]


def test_the_signals_pass_through_except_exception_and_deferring() -> None:
    reads = Reads({"row": 7})

    def first_half() -> int:
        try:
            value: int = readahead.answer("row")
        except Exception:  # noqa: BLE001 - what a first half might do: must not catch
            return -1
        return value

    deferred = asyncio.run(readahead.run(lambda: deferring(first_half), reads.fetch))
    assert deferred.value == 7
    assert deferred.error is None


def test_a_first_half_whose_read_changed_when_run_again_goes_to_a_thread() -> None:
    reads = Reads({"at 1": 1, "at 2": 2})
    asked = iter(["at 1", "at 2"])

    def first_half() -> int:
        value: int = readahead.answer(next(asked))  # a query that moves with the clock
        return value

    # Run 1 asks "at 1" (fetched); run 2 asks "at 2" where "at 1" was answered: it
    # would never settle on the loop.
    with pytest.raises(readahead.InThread, match="changed when run again"):
        asyncio.run(readahead.run(first_half, reads.fetch))
    assert reads.fetched == ["at 1"]


def test_more_reads_than_the_budget_send_the_first_half_to_a_thread() -> None:
    reads = Reads({f"r{i}": i for i in range(readahead.MAX_READS + 1)})

    def first_half() -> int:
        return sum(readahead.answer(f"r{i}") for i in range(readahead.MAX_READS + 1))

    with pytest.raises(readahead.InThread, match="more than"):
        asyncio.run(readahead.run(first_half, reads.fetch))
    assert len(reads.fetched) == readahead.MAX_READS


def test_a_write_under_a_run_sends_it_to_a_thread_and_nowhere_else() -> None:
    reads = Reads({"row": 1})

    def first_half() -> None:
        readahead.answer("row")
        readahead.refuse("a commit")

    with pytest.raises(readahead.InThread, match="a commit in a first half"):
        asyncio.run(readahead.run(first_half, reads.fetch))
    readahead.refuse("a commit")  # no run under way: nothing to refuse


def test_a_fetch_that_cannot_be_made_sends_the_first_half_to_a_thread() -> None:
    reads = Reads({"row": readahead.InThread("no connection free")})
    with pytest.raises(readahead.InThread, match="no connection free"):
        asyncio.run(readahead.run(lambda: readahead.answer("row"), reads.fetch))


def test_answer_outside_a_run_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="no read-ahead run"):
        readahead.answer("row")
