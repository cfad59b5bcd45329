"""prefetch: the next items computed in a thread; errors and early stops handled."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from txanomaly.io.prefetch import prefetch


def test_items_come_in_order_and_at_most_depth_ahead():
    made: list[int] = []

    def source() -> Iterator[int]:
        for i in range(6):
            made.append(i)
            yield i

    seen = []
    for item in prefetch(source(), depth=2):
        seen.append(item)
        # The producer is at most depth items ahead of the consumer (+1 being made).
        assert len(made) <= len(seen) + 3
    assert seen == list(range(6))


def test_a_producer_error_reaches_the_caller_after_the_good_items():
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise KeyError("bad record 3")

    got = []
    with pytest.raises(KeyError, match="bad record 3"):
        for item in prefetch(source()):
            got.append(item)
    assert got == [1, 2]


def test_stopping_early_closes_the_source():
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.set()

    for item in prefetch(source()):
        if item == 3:
            break
    assert closed.wait(5)
    with pytest.raises(ValueError, match="depth"):
        next(prefetch(iter([1]), depth=0))
