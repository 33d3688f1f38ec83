"""Several generations at once on one loaded model: one scheduler thread steps the engine for all of them.

A backend's Batch (llama.cpp's sequences in one context, openvino-genai's ContinuousBatchingPipeline) answers
three calls, all made on the scheduler's thread, so the engine is never entered from two threads:

    start(req) -> bool                 take the request in (a KV slot, a sampler); False: no room yet, it waits
    step(active) -> [(req, tokens, done)]   advance every active request by one engine step
    release(req)                       give its slot back (finished or cancelled)

Callers get a plain iterator of token ids from `submit()`, as a backend's `_token_stream` yields them; closing it
early cancels the request, which frees its slot at the next step. A request's stats.batched_max says how many
generations, at most, shared a step with it (itself included).
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Iterator

_END = object()


class Request:
    def __init__(self, prompt_ids: list[int], config, stats):
        self.prompt_ids = prompt_ids
        self.config = config
        self.stats = stats          # the caller's EngineStats
        stats.batched_max = 0
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.state = None           # the engine's per-request state


class Scheduler:
    def __init__(self, batch, name: str = "glmkit-batch"):
        self.batch = batch
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def submit(self, prompt_ids: list[int], config, stats) -> Iterator[int]:
        req = Request(prompt_ids, config, stats)
        self.inbox.put(req)
        try:
            while (item := req.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            req.cancelled.set()
            self.inbox.put(None)  # wake the scheduler if it sleeps, so the slot is freed now

    def close(self) -> None:
        self.closed = True
        self.inbox.put(None)
        self.thread.join(timeout=30)

    def _end(self, req: Request, error: BaseException | None = None) -> None:
        if req.state is not None:
            self.batch.release(req)
            req.state = None
        if error is not None:
            req.out.put(error)
        req.out.put(_END)

    def _loop(self) -> None:
        active: list[Request] = []
        waiting: collections.deque = collections.deque()
        while not self.closed:
            try:  # sleep only when nothing is running or waiting for a slot
                item = self.inbox.get(block=not active and not waiting)
                while True:
                    if item is not None:
                        waiting.append(item)
                    item = self.inbox.get_nowait()
            except queue.Empty:
                pass
            for req in [r for r in active if r.cancelled.is_set()]:
                active.remove(req)
                self._end(req)
            for req in [r for r in waiting if r.cancelled.is_set()]:
                waiting.remove(req)
                self._end(req)
            while waiting:
                try:
                    if not self.batch.start(waiting[0]):
                        break
                except Exception as e:  # a request the engine refuses is that request's error
                    self._end(waiting.popleft(), e)
                    continue
                active.append(waiting.popleft())
            if not active:
                continue
            for req in active:
                req.stats.batched_max = max(req.stats.batched_max, len(active))
            try:
                results = self.batch.step(active)
            except Exception as e:  # the engine failed: every request in this step gets the error
                for req in active:
                    self._end(req, e)
                active = []
                continue
            for req, tokens, done in results:
                for t in tokens:
                    req.out.put(t)
                if done:
                    active.remove(req)
                    self._end(req)
        for req in active + list(waiting):
            self._end(req, RuntimeError("the runtime was closed"))
