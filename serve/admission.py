"""One loaded model shared by every request: admission, a bounded queue, and cancellation.

Each generation runs Runtime.stream on a worker thread; a runtime loaded with parallel=N (glm-serve loads it
with N = --max-concurrency) batches N of them in its engine, so N workers run at once; a runtime without
batching gets one worker. A request's events reach its handler through an asyncio queue as the engine makes them.
Beyond the workers, up to `max_queue` requests wait in arrival order; beyond that a request is refused at once
with HTTP 429 and Retry-After — memory never grows with the load. A request whose client went away is cancelled:
dropped before it starts, or its generator closed, which stops its generation (see Runtime.stream).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor

from .protocol import APIError

_DONE = object()


class Admission:
    def __init__(self, runtime, max_queue: int = 8):
        self.runtime = runtime
        self.workers = runtime.parallel
        self.limit = self.workers + max_queue
        self.admitted = 0
        self.generating = 0      # generations running now
        self.peak = 0            # the most that ever ran at once
        self.lock = threading.Lock()  # the counters are updated from the worker threads
        self.finished = 0        # generations that ran to their end
        self.cancelled = 0       # generations stopped because their client went away
        self.worker = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="glm-serve-worker")

    def close(self) -> None:
        self.worker.shutdown(wait=True, cancel_futures=True)
        self.runtime.close()

    async def events(self, start: Callable[[], Generator], cancel: threading.Event) -> AsyncIterator:
        """The events of `start()` (a Runtime.stream), produced on a worker thread."""
        if self.admitted >= self.limit:
            raise APIError(429, f"the server is busy: {self.admitted} requests in progress or queued "
                                f"({self.workers} at once, {self.limit - self.workers} queued: --max-concurrency, "
                                "--max-queue); retry shortly", code="rate_limit_exceeded",
                           kind="rate_limit_error", headers={"Retry-After": "1"})
        self.admitted += 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            if cancel.is_set():
                put(_DONE)
                return
            stream, ended = None, False
            with self.lock:
                self.generating += 1
                self.peak = max(self.peak, self.generating)
            try:
                stream = start()
                for event in stream:
                    put(event)
                    if cancel.is_set():
                        break
                else:
                    ended = True
            except BaseException as e:  # re-raised in the handler, which turns it into an HTTP answer
                put(e)
                ended = True
            finally:
                if stream is not None:
                    stream.close()
                with self.lock:
                    self.finished += ended
                    self.cancelled += not ended
                    self.generating -= 1
                put(_DONE)

        future = loop.run_in_executor(self.worker, work)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            self.admitted -= 1
            if not future.done():
                future.add_done_callback(lambda f: f.exception())  # finishes on its own once cancelled
