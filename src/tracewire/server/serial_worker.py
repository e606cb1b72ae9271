"""One worker thread that runs submitted calls in order (for state that is not thread-safe).

The model behind steering keeps process-wide wiring while it runs, and a feature store is
simplest to reason about with one user at a time; routes hand such calls to a ``SerialWorker``
and await the result without blocking the event loop. A closed worker starts a new thread on the
next call, so an object outlives the app that closed it (tests reuse one loaded model).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class SerialWorker:
    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=self.name)
            return self._executor.submit(fn)

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the worker thread, awaited."""
        return await asyncio.wrap_future(self.submit(fn))

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
