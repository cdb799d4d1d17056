"""Group commit (`orchestrator.service.group_commit`): who goes with whom, and whose error is
whose."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.errors import StorageError
from orchestrator.service.group_commit import GroupCommit


async def test_calls_made_while_a_group_commits_go_together_in_the_next() -> None:
    groups: list[list[int]] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def commit(items: list[int]) -> list[int | Exception]:
        groups.append(items)
        if len(groups) == 1:
            first_in.set()
            await release.wait()
        return [item * 10 for item in items]

    committer: GroupCommit[int, int] = GroupCommit(commit, lanes=1, limit=3)
    first = asyncio.create_task(committer.submit(0))
    await first_in.wait()  # alone: it went at once
    later = [asyncio.create_task(committer.submit(n)) for n in range(1, 6)]
    await asyncio.sleep(0)
    release.set()

    assert await first == 0
    assert [await task for task in later] == [10, 20, 30, 40, 50]
    assert groups == [[0], [1, 2, 3], [4, 5]]  # at most `limit` a group


async def test_an_item_the_commit_refuses_costs_only_itself() -> None:
    groups: list[list[str]] = []

    async def commit(items: list[str]) -> list[str | Exception]:
        groups.append(items)
        if "poison" in items:
            raise ValueError("cannot write poison")
        return [item.upper() for item in items]

    committer: GroupCommit[str, str] = GroupCommit(commit, lanes=1)
    outcomes = await asyncio.gather(
        *(committer.submit(s) for s in ("a", "poison", "b")), return_exceptions=True
    )

    assert outcomes[0] == "A"
    assert outcomes[2] == "B"
    assert isinstance(outcomes[1], ValueError)
    assert groups == [["a", "poison", "b"], ["a"], ["poison"], ["b"]]


async def test_a_transient_failure_reaches_every_caller_of_the_group_without_retrying() -> None:
    calls = 0

    async def commit(items: list[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        raise StorageError("database unavailable")

    committer: GroupCommit[str, str] = GroupCommit(commit, lanes=1)
    outcomes = await asyncio.gather(
        *(committer.submit(s) for s in ("a", "b")), return_exceptions=True
    )
    assert all(isinstance(outcome, StorageError) for outcome in outcomes)
    assert calls <= 2  # a group each, or one for both: never one by one after


async def test_an_outcome_that_is_an_exception_goes_to_its_caller_only() -> None:
    async def commit(items: list[str]) -> list[str | Exception]:
        return [KeyError(item) if item == "missing" else item for item in items]

    committer: GroupCommit[str, str] = GroupCommit(commit)
    with pytest.raises(KeyError):
        await committer.submit("missing")
    assert await committer.submit("there") == "there"


async def test_submit_many_fills_groups_in_order_on_every_lane_and_answers_each_item() -> None:
    groups: list[list[int]] = []
    running = 0
    most_at_once = 0

    async def commit(items: list[int]) -> list[int | Exception]:
        nonlocal running, most_at_once
        groups.append(items)
        running += 1
        most_at_once = max(most_at_once, running)
        await asyncio.sleep(0)  # let another lane begin meanwhile
        running -= 1
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in items]

    committer: GroupCommit[int, int] = GroupCommit(commit, lanes=2, limit=3)
    outcomes = await committer.submit_many(list(range(8)))

    assert groups == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert most_at_once == 2
    assert [o if isinstance(o, int) else str(o) for o in outcomes] == [
        0, "odd 1", 20, "odd 3", 40, "odd 5", 60, "odd 7"
    ]  # fmt: skip
