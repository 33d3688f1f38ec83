"""What goes into a generation and what comes out, the same for every backend.

`Runtime.stream()` yields `TextDelta`s (and a `ToolCall` for each call, when the prompt declared tools) and then
one `GenerationResult` (in the manner of mlx-lm's GenerationResponse); `generate()` returns the result alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from glmkit.glm4.toolcalls import ToolCall

from .structure import Structure


@dataclass
class GenerationConfig:
    """Sampling, identical on every backend: repetition penalty, then temperature, then top-k, then top-p, then a
    draw from what is left (transformers' order; top-k commutes with temperature, so llama.cpp's chain and
    openvino-genai's sampler compute the same distribution). temperature 0 is greedy. frequency_penalty and
    presence_penalty are OpenAI's: subtracted from a token's logit per occurrence in the answer so far, and once if
    it occurs at all (the prompt does not count). `structure` constrains the answer (runtimes/structure.py)."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    structure: Structure | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @classmethod
    def for_model(cls, sampling: dict, temperature: float | None = None, top_p: float | None = None,
                  top_k: int | None = None, default_temperature: float = 0.0, **rest) -> GenerationConfig:
        """A config whose temperature, top_p and top_k are the caller's, else the model card's (`sampling`, e.g.
        Z1's 0.6 / 0.95 / 40), else `default_temperature` (greedy for glm-chat, OpenAI's 1 for glm-serve), 1, 0."""
        return cls(temperature=temperature if temperature is not None else sampling.get("temperature",
                                                                                        default_temperature),
                   top_p=top_p if top_p is not None else sampling.get("top_p", 1.0),
                   top_k=top_k if top_k is not None else sampling.get("top_k", 0), **rest)


@dataclass
class EngineStats:
    """What a backend reports for one generation (each call has its own, so generations may run at once):
    the prompt tokens whose KV it reused, and the engine's own figures where it has them (None: not reported)."""

    reused: int | None = 0                       # prompt tokens whose KV the engine already held (None: it does
                                                 # not say — openvino-genai's batching caches prefixes uncounted)
    prefill_ms: float | None = None              # llama.cpp's perf counter
    prompt_tokens_evaluated: int | None = None   # llama.cpp's perf counter
    decode_tps: float | None = None              # llama.cpp's / openvino-genai's perf metrics
    ttft_ms: float | None = None                 # openvino-genai's perf metrics
    prompt_tokens: int | None = None             # openvino-genai's count of input tokens
    cache_tokens_before: int | None = None       # transformers' KV cache length when the new tokens went in
    batched_max: int | None = None               # the most generations that shared an engine step with this one
    proposed: int | None = None                  # speculative decoding: tokens proposed for verification
    accepted: int | None = None                  # … and how many of them the model kept
    image_encode_ms: float | None = None         # GLM-4V: the vision tower's run for this call (0: cached)
    image_embeddings: int | None = None          # GLM-4V: embeddings the image adds beyond its marker tokens

    def figures(self) -> dict:
        """The engine's own figures, as GenerationResult.engine holds them."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "reused" and getattr(self, f.name) is not None}


@dataclass
class TextDelta:
    """A piece of streamed text: never half a UTF-8 character, never the start of a stop string. Z1 models'
    `<think>` part comes as reasoning=True deltas, the answer as reasoning=False."""

    text: str
    reasoning: bool = False


@dataclass
class GenerationResult:
    text: str                   # the answer: exactly the joined non-reasoning TextDeltas (no tool call's text)
    token_ids: list[int]
    finish_reason: str          # stop (a stop token) | stop_string | length | interrupted
    prompt_tokens: int
    ttft_ms: float              # wall clock, request to first generated token
    prefill_tps: float          # prompt tokens evaluated / ttft (a reused prefix is not evaluated again)
    decode_tps: float           # tokens after the first / time after the first
    peak_rss_mb: float          # this process's peak resident memory so far
    reasoning: str | None = None  # Z1 models: the <think>…</think> part, kept out of `text` and history
    cached_tokens: int | None = 0  # prompt tokens whose KV the engine already held (None: the engine does not say)
    max_new_tokens: int = 0     # the answer budget used: the request's, or less when the context had less room
    clamped: bool = False       # the context left less room than the request's max_new_tokens
    engine: dict = field(default_factory=dict)  # the engine's own figures, as a cross-check
    itl_ms: list[float] = field(default_factory=list)  # inter-token latencies (time per output token)
    tool_calls: list[ToolCall] = field(default_factory=list)  # the turn's calls, when the prompt declared tools
    stop_token: int | None = None  # the stop token that ended the answer (not in token_ids), where one did

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability where it stands, and the likeliest tokens there (id, logprob), best first."""

    id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
