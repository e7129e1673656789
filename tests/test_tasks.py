"""Supervision and cancellation-safe waiting: a service must stop when told to."""

from __future__ import annotations

import asyncio

import pytest

from edge.tasks import TaskEnded, supervise, within


def test_cancellation_racing_a_result_is_not_swallowed() -> None:
    async def main() -> list[str]:
        event = asyncio.Event()
        seen: list[str] = []

        async def loop() -> None:
            while True:
                await within(event.wait(), 10)
                seen.append("woke")
                event.clear()

        task = asyncio.create_task(loop())
        await asyncio.sleep(0)  # the loop waits on the event
        event.set()
        task.cancel()  # in the same iteration the event completes
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        return seen

    assert asyncio.run(main()) == []


def test_within_times_out_and_cancels_the_inner_wait() -> None:
    async def main() -> bool:
        queue: asyncio.Queue[int] = asyncio.Queue()
        with pytest.raises(TimeoutError):
            await within(queue.get(), 0.05)
        queue.put_nowait(1)  # not taken by a leftover getter
        return queue.qsize() == 1

    assert asyncio.run(main())


def test_supervise_propagates_the_first_failure_and_stops_the_rest() -> None:
    stopped: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(name)

    async def failing() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("input loop broke")

    async def main() -> None:
        await supervise({"a": forever("a"), "b": forever("b"), "bad": failing()})

    with pytest.raises(RuntimeError, match="input loop broke"):
        asyncio.run(main())
    assert sorted(stopped) == ["a", "b"]


def test_a_loop_that_returns_is_a_failure() -> None:
    async def quits() -> None:
        return None

    with pytest.raises(TaskEnded, match="quits"):
        asyncio.run(supervise({"quits": quits()}))
