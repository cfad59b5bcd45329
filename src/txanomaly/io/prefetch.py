"""Computing the next items of an iterator in a background thread while the caller works.

``txanomaly score`` reads and computes the features of a chunk (Polars, the compiled passes:
both release the GIL), then scores it (NumPy, PyTorch: also outside the GIL). On two cores the
two halves can run side by side: :func:`prefetch` runs the producer one item (``depth``)
ahead in a thread, so memory grows by that many items, not more.

An exception in the producer is raised in the caller at the item where it happened. When the
caller stops early (a ``break``, an error of its own), the producer stops at its next item and
the source iterator is closed (its ``finally`` blocks run).

>>> list(prefetch(iter(range(5))))
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield the items of ``items``, the next ``depth`` computed ahead in a thread."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    break
            else:
                put((True, _END))
        except BaseException as exc:  # handed to the caller, raised there
            put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="txanomaly-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = ready.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join()


__all__ = ["prefetch"]
