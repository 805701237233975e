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


def test_what_a_first_half_counts_is_counted_once_however_often_it_runs() -> None:
    # Would fail if: a metric a first half updates before a read (the token cache's hit or
    # miss, the validation time) were counted again by each run after that read, or by the
    # `finally` of a run a read stopped.
    reads = Reads({"agent": "a-1", "session": "s-1"})
    counted: list[str] = []
    runs: list[int] = []

    def first_half() -> str:
        runs.append(1)
        readahead.count(lambda: counted.append("before"))
        try:
            agent = readahead.answer("agent")
        finally:
            readahead.count(lambda: counted.append("finally"))
        readahead.count(lambda: counted.append("between"))
        session = readahead.answer("session")
        readahead.count(lambda: counted.append("after"))
        return f"{agent}/{session}"

    assert asyncio.run(readahead.run(first_half, reads.fetch)) == "a-1/s-1"
    assert len(runs) == 3
    assert counted == ["before", "finally", "between", "after"]
    readahead.count(lambda: counted.append("outside a run"))  # counted at once
    assert counted[-1] == "outside a run"


def test_a_first_half_sent_to_a_thread_counts_only_there() -> None:
    # Would fail if: what the runs on the loop counted before the first half went to a
    # thread stayed counted, so that the thread's run counted it a second time.
    reads = Reads({"agent": "a-1"})
    counted: list[str] = []

    def first_half() -> str:
        readahead.count(lambda: counted.append("checked"))
        agent: str = readahead.answer("agent") if readahead.active() else "a-1"
        readahead.refuse("a commit")  # stops a run on the loop: to a thread
        return agent

    with pytest.raises(readahead.InThread):
        asyncio.run(readahead.run(first_half, reads.fetch))
    assert counted == []
    assert first_half() == "a-1"  # the thread's run, outside any run on the loop
    assert counted == ["checked"]


def test_a_first_half_that_raises_keeps_what_it_counted() -> None:
    reads = Reads({"agent": "a-1"})
    counted: list[str] = []

    def first_half() -> str:
        readahead.count(lambda: counted.append("checked"))
        readahead.answer("agent")
        raise NotFound("no such session")

    with pytest.raises(NotFound):
        asyncio.run(readahead.run(first_half, reads.fetch))
    assert counted == ["checked"]
