"""The one runtime interface: every backend yields token ids; glmkit does the rest the same way for all.

Backends implement `_token_stream(prompt_ids, config, stats, image)`: token ids in, token ids out, reporting in a typed
EngineStats of the call's own (so calls may run at once) the prompt tokens whose KV they reused and their own
figures. The prompt is rendered once by glmkit.glm4 (chat template, `[gMASK]<sop>`, tools, a forced prefix) and
read back by its one output parser (answer marker, Z1 reasoning, tool calls, stop strings); context limits, stop
tokens, incremental detokenisation and wall-clock timing live here, once.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING

from glmkit.glm4 import families
from glmkit.glm4 import prompt as prompts
from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.parser import OutputParser, Reasoning, Text
from glmkit.glm4.prompt import Prompt
from glmkit.glm4.toolcalls import ToolCall

from .capabilities import Capabilities
from .logprobs import token_logprobs
from .memory import peak_rss_mb
from .types import EngineStats, GenerationConfig, GenerationResult, TextDelta, TokenLogprob

if TYPE_CHECKING:
    from .kinds.base import ArtifactKind


class Runtime(ABC):
    """Load with glmkit.runtimes.load(); then generate(), stream() or chat()."""

    backend = "?"
    capabilities = Capabilities()
    #: the artifact kind (runtimes/kinds/) load() opened it as: its bytes, its engine's own paths
    kind: ArtifactKind | None = None
    source: str | None = None  # the artifact's path (or SRC) as load() was given it

    def __init__(self, tokenizer, chat_format: families.ChatFormat, context_length: int, name: str):
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.context_length = context_length
        self.name = name
        self.stop_ids = set(tokenizer.stop_ids)
        #: generations that may run at once (load(parallel=N)); stream() is thread-safe when it is above 1
        self.parallel = 1
        #: K and V of one token over all layers, in the cache type the engine runs (0 where unknown)
        self.kv_bytes_per_token = 0.0
        #: (layers, KV heads, head dim) of the KV cache, where the backend knows it
        self.kv_shape: tuple[int, int, int] | None = None

    # -- what a backend provides -------------------------------------------------------------------------------
    @abstractmethod
    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig, stats: EngineStats,
                      image=None) -> Iterator[int]:
        """Yield generated token ids one by one until the caller stops iterating (or max_new_tokens); set
        stats.reused to the prompt tokens whose KV was reused, and the engine's own figures where it has them."""

    def prompt_cache_stats(self) -> dict | None:
        """The host-RAM cache of evicted conversations' KV, where the backend keeps one."""
        return None

    def image_stats(self) -> dict | None:
        """Images encoded and image-feature cache hits, where the backend reads images."""
        return None

    def reset_cache(self) -> None:  # noqa: B027  (optional: engines without a cache keep this)
        """Forget the KV the engine holds, so the next call prefills its whole prompt (a cold start)."""

    def close(self) -> None:  # noqa: B027  (optional: engines that hold nothing keep this)
        pass

    # -- shared -------------------------------------------------------------------------------------------------
    def prompt(self, prompt, raw: bool = False, tools: list[dict] | None = None, assistant_prefix: str = "",
               calls=None) -> Prompt:
        """`prompt` rendered once (glmkit.glm4.prompt): a Prompt as it is; token ids as given; a plain string with
        `[gMASK]<sop>` in front (raw=True: as it is); GLM-4 chat turns through the model's chat template, with
        OpenAI `tools` (`calls`: the names a reply may call, default all) and `assistant_prefix` written after the
        generation prompt, e.g. a forced tool name."""
        if isinstance(prompt, Prompt):
            return prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            return prompts.from_ids(prompt)
        if isinstance(prompt, str):
            return prompts.from_text(self.tokenizer, prompt, raw=raw)
        return prompts.from_messages(self.tokenizer, prompt, self.chat_format, tools, assistant_prefix, calls)

    def prompt_ids(self, prompt, raw: bool = False, tools: list[dict] | None = None,
                   assistant_prefix: str = "") -> list[int]:
        return self.prompt(prompt, raw=raw, tools=tools, assistant_prefix=assistant_prefix).ids

    def budget(self, n_prompt: int, max_new_tokens: int) -> int:
        """Answer tokens that fit after a prompt of n_prompt tokens; a prompt that cannot fit is an error."""
        room = self.context_length - n_prompt
        if room < 1:
            raise GlmkitError(f"the prompt has {n_prompt} tokens but the context holds {self.context_length}; "
                              f"shorten it by at least {n_prompt - self.context_length + 1} tokens or load the "
                              "model with a larger n_ctx")
        return min(max_new_tokens, room)

    def stream(self, prompt, config: GenerationConfig | None = None, raw: bool = False,
               tools: list[dict] | None = None, assistant_prefix: str = "") -> Iterator:
        """Yield TextDelta pieces as they are decoded (a ToolCall for each call of a prompt that declared tools),
        then the GenerationResult last."""
        config = config or GenerationConfig()
        rendered = self.prompt(prompt, raw=raw, tools=tools, assistant_prefix=assistant_prefix)
        ids = rendered.ids
        if config.structure is not None and not self.capabilities.constrained:
            raise GlmkitError(f"constrained answers (response_format, tool_choice 'required') need a backend with "
                              f"constrained decoding; {self.backend} has none")
        budget = self.budget(len(ids), config.max_new_tokens)
        if config.seed is None and not config.greedy:  # a fresh draw each call on every engine (openvino-genai's
            config = dataclasses.replace(config, seed=secrets.randbits(32))  # own seed is fixed otherwise)
        parser = OutputParser(dataclasses.replace(rendered.output, stop=tuple(config.stop)))
        control = set(self.tokenizer.special_ids.values())
        decoder = self.tokenizer.decoder()
        out: list[int] = []
        finish, stop_token = "length", None
        stats = EngineStats()
        t0 = time.perf_counter()
        stamps: list[float] = []
        run = dataclasses.replace(config, max_new_tokens=budget)
        tokens = (self._token_stream(ids, run, stats) if rendered.image is None  # a text engine may omit image
                  else self._token_stream(ids, run, stats, image=rendered.image))
        try:
            for tok in tokens:
                stamps.append(time.perf_counter())
                if tok in self.stop_ids and not config.ignore_eos:
                    finish, stop_token = "stop", tok
                    break
                out.append(tok)
                piece = decoder.step(tok)
                if tok not in control or parser.in_call:  # a control token is never text; between calls it
                    yield from _deltas(parser.feed(piece))  # separates them (GLM-4's "<|assistant|>")
                if parser.stopped:
                    finish = "stop_string"
                    break
                if len(out) >= budget:
                    break
            else:  # the engine ended by itself before the budget: it met a stop token
                if len(out) < budget:
                    finish = "stop"
        except KeyboardInterrupt:
            finish = "interrupted"
        finally:
            close = getattr(tokens, "close", None)
            if close:
                close()
        t_end = time.perf_counter()
        if finish != "interrupted":
            yield from _deltas(parser.feed(decoder.flush()) + parser.close(truncated=finish == "length"))
        ttft = (stamps[0] if stamps else t_end) - t0
        decode_time = t_end - (stamps[0] if stamps else t_end)
        n_prompt = len(ids) + (stats.image_embeddings or 0)  # an image costs its embeddings, as OpenAI counts it
        evaluated = n_prompt - (stats.reused or 0)
        yield GenerationResult(
            text=parser.content, token_ids=out, finish_reason=finish, prompt_tokens=n_prompt, ttft_ms=ttft * 1000,
            prefill_tps=evaluated / ttft if ttft > 0 else 0.0,
            decode_tps=(len(out) - 1) / decode_time if len(out) > 1 and decode_time > 0 else 0.0,
            peak_rss_mb=peak_rss_mb(), reasoning=parser.reasoning if rendered.output.thinks else None,
            cached_tokens=stats.reused, max_new_tokens=budget, clamped=budget < config.max_new_tokens,
            engine=stats.figures(), itl_ms=[(b - a) * 1000 for a, b in zip(stamps, stamps[1:len(out)])],
            tool_calls=list(parser.calls), stop_token=stop_token)

    def score(self, ids: list[int], top: int = 0) -> list[TokenLogprob | None]:
        """For each position, log P(ids[i] | ids[:i]) and the `top` likeliest tokens there (None at position 0,
        which nothing predicts). Raw values — the model's own distribution, before temperature, penalties or a
        grammar — from the artifact's exact logits (its kind's, as verification reads them, in an engine
        instance of their own: runtimes/logits.py)."""
        return token_logprobs(self._exact_logits(ids), ids, top)

    def _exact_logits(self, ids: list[int]):
        if self.kind is None or self.source is None:
            raise GlmkitError("log-probabilities need a runtime opened with glmkit.runtimes.load()")
        return self.kind.logits(self.source, ids)

    def generate(self, prompt, config: GenerationConfig | None = None, raw: bool = False,
                 tools: list[dict] | None = None, assistant_prefix: str = "") -> GenerationResult:
        result = None
        for event in self.stream(prompt, config, raw=raw, tools=tools, assistant_prefix=assistant_prefix):
            result = event
        assert isinstance(result, GenerationResult)  # stream() always ends with it
        return result

    def chat(self, system: str | None = None, config: GenerationConfig | None = None):
        from .session import ChatSession

        return ChatSession(self, system=system, config=config)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _deltas(events) -> Iterator:
    """The parser's events as the runtime's stream: text as TextDeltas, calls as they are; End says nothing new."""
    for e in events:
        if isinstance(e, Text):
            yield TextDelta(e.text)
        elif isinstance(e, Reasoning):
            yield TextDelta(e.text, reasoning=True)
        elif isinstance(e, ToolCall):
            yield e


__all__ = ["GenerationConfig", "GenerationResult", "Runtime", "TextDelta"]
