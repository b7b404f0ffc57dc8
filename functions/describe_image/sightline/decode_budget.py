"""How much decoded-pixel memory the instance's preparations may hold at once.

A batch of ten records is prepared concurrently, and one image at the pixel limit (100 MP) takes hundreds of MB
once decoded: a fixed number of slots let two such images, or ten small ones, through alike. The budget admits
images by their estimated footprint instead (from the header: ``imaging.decode_footprint``), first come first served, so a large
image waits for room and is never overtaken by a stream of small ones; an image larger than the whole budget runs
alone.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

MIB = 1024 * 1024
# The share of the function's memory that decoded pixels may take; the rest holds the runtime, the batch's object
# bytes (up to MAX_OBJECT_BYTES each) and the allocator's slack.
DECODE_SHARE = 0.5
MIN_CAPACITY_BYTES = 256 * MIB


def capacity_for(memory_mb: int) -> int:
    """The decode budget of a function with ``memory_mb`` of memory."""
    return max(MIN_CAPACITY_BYTES, int(memory_mb * MIB * DECODE_SHARE))


class DecodeBudget:
    """A first-come-first-served weighted semaphore over bytes of decoded pixels."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 1:
            raise ValueError("the decode budget must be positive")
        self.capacity = capacity_bytes
        self._in_use = 0
        self._waiting: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def in_use(self) -> int:
        with self._changed:
            return self._in_use

    @contextmanager
    def reserve(self, footprint: int) -> Iterator[int]:
        """Hold ``footprint`` bytes (at least 1, at most the whole budget) while the block runs."""
        weight = min(max(int(footprint), 1), self.capacity)
        turn = object()
        with self._changed:
            self._waiting.append(turn)
            while self._waiting[0] is not turn or self._in_use + weight > self.capacity:
                self._changed.wait()
            self._waiting.popleft()
            self._in_use += weight
            self._changed.notify_all()  # the next in line may fit beside us
        try:
            yield weight
        finally:
            with self._changed:
                self._in_use -= weight
                self._changed.notify_all()
