"""A planned request's answer over the OpenAI protocol: one body, or server-sent events, for each of its n choices.

The choices run one after another on the same worker: each later one finds the prompt's KV the one before left
(its prefix reused, `cached_tokens` says so) and draws with its own seed (the request's seed + its index).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import StreamingResponse

from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.toolcalls import ToolCall
from glmkit.runtimes import GenerationResult, TextDelta

from . import logprobs as logprob_objects
from .admission import Admission
from .plan import RequestPlan
from .protocol import APIError

log = logging.getLogger("glmkit.serve")
FINISH = {"stop": "stop", "stop_string": "stop", "length": "length", "interrupted": "stop"}


def usage(results: list[GenerationResult]) -> dict:
    """OpenAI's usage of a request: its prompt once, every choice's completion tokens."""
    first = results[0]
    done = sum(len(r.token_ids) for r in results)
    out: dict = {"prompt_tokens": first.prompt_tokens, "completion_tokens": done,
                 "total_tokens": first.prompt_tokens + done}
    if first.cached_tokens is not None:  # an engine that does not count its cache hits claims none
        out["prompt_tokens_details"] = {"cached_tokens": first.cached_tokens}
    proposed = [r.engine["proposed"] for r in results if r.engine.get("proposed") is not None]
    accepted = [r.engine["accepted"] for r in results if r.engine.get("accepted") is not None]
    if len(accepted) == len(results):  # speculative decoding, in OpenAI's predicted-output fields (openvino-genai
        out["completion_tokens_details"] = {"accepted_prediction_tokens": sum(accepted)}  # does not say what it
        if len(proposed) == len(results):                                                 # proposed)
            out["completion_tokens_details"]["rejected_prediction_tokens"] = sum(proposed) - sum(accepted)
    return out


def arguments(call, plan: RequestPlan) -> str:
    """A tool declared without parameters takes none: whatever the model wrote after its name is not passed on."""
    return "{}" if call.name in plan.no_arguments else call.arguments


def tool_calls(calls, plan: RequestPlan) -> list[dict]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": arguments(c, plan)}}
            for c in calls]


@dataclass(frozen=True)
class Reply:
    """What every chunk or body of one response repeats."""

    id: str
    created: int
    model: str
    chat: bool

    def chunk(self, delta: dict | None = None, finish=None, usage=None, text: str | None = None,
              index: int = 0, logprobs: dict | None = None) -> str:
        choice = ({"index": index, "delta": delta or {}, "finish_reason": finish, "logprobs": logprobs}
                  if self.chat else {"index": index, "text": text or "", "finish_reason": finish,
                                     "logprobs": logprobs})
        data = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [] if usage is not None else [choice]}
        if usage is not None:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


@dataclass(frozen=True)
class Scored:
    """The raw logprobs of a request's prompt and one choice's answer (Runtime.score), after that answer."""

    ids: list[int]
    tokens: list


def run(runtime, plan: RequestPlan):
    """(choice, event) for each choice in turn: its answer's events (none where max_tokens is 0), then, where
    logprobs were asked, the scores of the prompt and the answer — the stop token that ended it included, as
    the legacy completions list has it."""
    for index in range(plan.n):
        seed = plan.config.seed
        config = plan.config if seed is None or index == 0 else dataclasses.replace(
            plan.config, seed=(seed + index) % 2**32)
        if config.max_new_tokens == 0:  # echo alone: the prompt's logprobs, nothing generated
            result: GenerationResult | None = GenerationResult(
                text="", token_ids=[], finish_reason="length", prompt_tokens=len(plan.prompt.ids), ttft_ms=0.0,
                prefill_tps=0.0, decode_tps=0.0, peak_rss_mb=0.0, cached_tokens=None)
            yield index, result
        else:
            result = None
            for event in runtime.stream(plan.prompt, config):  # rendered once, in the plan
                if isinstance(event, GenerationResult):
                    result = event
                yield index, event
        if plan.logprobs is not None and result is not None:
            stop = [result.stop_token] if result.stop_token is not None else []
            ids = [*plan.prompt.ids, *result.token_ids, *stop]
            yield index, Scored(ids, runtime.score(ids, plan.logprobs))


async def respond(request: Request, admission: Admission, plan: RequestPlan, name: str):
    cancel = threading.Event()
    reply = Reply(f"{'chatcmpl' if plan.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time()), name,
                  plan.chat)
    runtime = admission.runtime
    events = admission.events(lambda: run(runtime, plan), cancel)
    if plan.stream:
        first = await _first(events)  # errors before the first event (busy, engine failure) are HTTP errors
        return StreamingResponse(_sse(request, events, first, plan, reply, cancel, runtime),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # nginx: pass on
    text: list[list[str]] = [[] for _ in range(plan.n)]
    reasoning: list[list[str]] = [[] for _ in range(plan.n)]
    results: list[GenerationResult | None] = [None] * plan.n
    scored: list[Scored | None] = [None] * plan.n
    async for index, event in events:
        if isinstance(event, TextDelta):
            (reasoning if event.reasoning else text)[index].append(event.text)
        elif isinstance(event, GenerationResult):
            results[index] = event
        elif isinstance(event, Scored):
            scored[index] = event
        if await request.is_disconnected():
            cancel.set()
            break
    done = [r for r in results if r is not None]
    if len(done) < plan.n:
        raise APIError(499, "client closed the request", kind="client_closed")
    choices = [_choice(runtime, plan, i, "".join(text[i]), "".join(reasoning[i]), r, scored[i])
               for i, r in enumerate(done)]
    return {"id": reply.id, "object": "chat.completion" if plan.chat else "text_completion",
            "created": reply.created, "model": name, "choices": choices, "usage": usage(done)}


def _echoed(runtime, plan: RequestPlan) -> str:
    return "" if plan.echo_from is None else runtime.tokenizer.decode(plan.prompt.ids[plan.echo_from:])


def _logprobs(runtime, plan: RequestPlan, result: GenerationResult, scored: Scored | None) -> dict | None:
    """A choice's logprobs object: the answer's (chat), or the echoed prompt's and the answer's (completions)."""
    if scored is None:
        return None
    n_prompt = len(plan.prompt.ids)
    if plan.chat:
        return logprob_objects.chat(runtime.tokenizer, scored.tokens[n_prompt:n_prompt + len(result.token_ids)])
    start_at = n_prompt if plan.echo_from is None else plan.echo_from
    return logprob_objects.completion(runtime.tokenizer, scored.tokens[start_at:], scored.ids[start_at:])


def _choice(runtime, plan: RequestPlan, index: int, text: str, reasoning: str, result: GenerationResult,
            scored: Scored | None) -> dict:
    lp = _logprobs(runtime, plan, result, scored)
    if not plan.chat:
        return {"index": index, "text": _echoed(runtime, plan) + text, "logprobs": lp,
                "finish_reason": FINISH[result.finish_reason]}
    calls = result.tool_calls
    message: dict = {"role": "assistant", "content": text if not calls else None}
    if calls:
        message["tool_calls"] = tool_calls(calls, plan)
    if reasoning:
        message["reasoning_content"] = reasoning
    return {"index": index, "message": message, "finish_reason": _finish(plan, result), "logprobs": lp}


async def _first(events):
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


def _finish(plan: RequestPlan, result: GenerationResult) -> str:
    return "tool_calls" if plan.chat and result.tool_calls else FINISH[result.finish_reason]


async def _sse(request, events, first, plan: RequestPlan, reply: Reply, cancel, runtime):
    """The runtime's events as server-sent events, choice after choice: text and reasoning as they come, each
    tool call whole once the turn's calls are known (the output parser holds a call until it parses). Where
    logprobs were asked, a choice's come in one chunk after its text, before its finish_reason: they are scored
    once the answer is whole (Runtime.score), and clients join the chunks' logprobs as they join the text."""
    chunk = reply.chunk
    results: list[GenerationResult] = []
    n_calls, opened = 0, -1
    try:
        pending = [] if first is None else [first]
        while True:
            if pending:
                index, event = pending.pop()
            else:
                try:
                    index, event = await events.__anext__()
                except StopAsyncIteration:
                    break
            if await request.is_disconnected():
                cancel.set()
                return
            if index != opened:  # a choice begins
                opened, n_calls = index, 0
                if plan.chat:
                    yield chunk({"role": "assistant", "content": ""}, index=index)
                elif plan.echo_from is not None:
                    yield chunk(text=_echoed(runtime, plan), index=index)
            if isinstance(event, GenerationResult | Scored):
                if isinstance(event, GenerationResult):
                    results.append(event)
                    if plan.logprobs is not None:  # the finish waits for the answer's scores
                        continue
                lp = _logprobs(runtime, plan, results[-1], event) if isinstance(event, Scored) else None
                if lp is not None:
                    yield chunk({}, index=index, logprobs=lp) if plan.chat else chunk(text="", index=index,
                                                                                       logprobs=lp)
                finish = _finish(plan, results[-1])
                yield chunk({}, finish=finish, index=index) if plan.chat else chunk(text="", finish=finish,
                                                                                     index=index)
            elif isinstance(event, ToolCall):
                yield chunk({"tool_calls": [{"index": n_calls, "id": event.id, "type": "function",
                                             "function": {"name": event.name, "arguments": ""}}]}, index=index)
                yield chunk({"tool_calls": [{"index": n_calls, "function": {"arguments": arguments(event, plan)}}]},
                            index=index)
                n_calls += 1
            elif not plan.chat:
                yield chunk(text=event.text, index=index)
            elif event.reasoning:
                yield chunk({"reasoning_content": event.text}, index=index)
            else:
                yield chunk({"content": event.text}, index=index)
        if len(results) < plan.n:
            return
        if plan.include_usage:
            yield chunk(usage=usage(results))
        yield "data: [DONE]\n\n"
    except APIError as e:
        yield f"data: {json.dumps(e.body())}\n\n"
    except GlmkitError as e:
        yield f"data: {json.dumps(APIError(400, str(e)).body())}\n\n"
    except Exception as e:  # after the 200 is sent, an error can only be an event
        log.exception("error while streaming")
        body = APIError(500, f"internal error ({type(e).__name__})", kind="server_error").body()
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        cancel.set()
        await events.aclose()
