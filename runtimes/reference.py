"""The PyTorch reference: transformers on the CPU, decoding token by token with the KV cache.

The cache is kept between calls: a prompt that shares a prefix with what it holds prefills only the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from glmkit.glm4.errors import GlmkitError

from .base import Runtime
from .capabilities import Capabilities
from .kv import HeldKV
from .types import EngineStats, GenerationConfig

DTYPES = ("float32", "bfloat16", "float16")
CAPABILITIES = Capabilities(penalties=True, options=("n_ctx", "threads", "prefix_cache", "dtype"))


def _openai_penalties(answer, scores, config: GenerationConfig):
    """OpenAI's frequency and presence penalties (transformers has none): per occurrence in the answer so far,
    and once for occurring at all."""
    if answer.numel():
        ids, counts = answer.unique(return_counts=True)
        scores[0, ids] -= config.frequency_penalty * counts + config.presence_penalty
    return scores


class TransformersRuntime(Runtime):
    backend = "transformers"
    capabilities = CAPABILITIES

    def __init__(self, path, dtype: str = "float32", threads: int | None = None, n_ctx: int | None = None,
                 prefix_cache: bool = True, model_name: str | None = None):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from glmkit.glm4 import families

        from .tokenizer import from_hf

        if dtype not in DTYPES:
            raise GlmkitError(f"dtype {dtype}: choose one of {', '.join(DTYPES)}")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.dtype = dtype
        self.prefix_cache = prefix_cache
        cfg = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        #: the transformers model, for callers that use it directly
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype),
                                                          trust_remote_code=False).eval()
        tok = from_hf(path)
        fmt = families.chat_format(cfg.to_dict(), model_name or str(path), tok.chat_template)
        native = families.context_length(cfg.to_dict())
        super().__init__(tok, fmt, min(int(n_ctx), native) if n_ctx else native, model_name or str(path))
        self._cache: Any = None  # transformers' DynamicCache once a prompt ran
        self.kv = HeldKV(self._clear, lambda n: self._cache.crop(n))

    def _clear(self) -> None:
        self._cache = None

    def _exact_logits(self, ids: list[int]):
        """An fp32 model's logits are the exact ones: no second copy of it is loaded to score a prompt."""
        if self.dtype != "float32":
            return super()._exact_logits(ids)
        with self.torch.no_grad():
            return self.model(self.torch.tensor([ids])).logits[0].float().numpy()

    def reset_cache(self) -> None:
        self.kv.drop()

    def _processors(self, config: GenerationConfig, n_prompt: int):
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        procs = LogitsProcessorList()
        if config.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
        if config.frequency_penalty or config.presence_penalty:
            procs.append(lambda ids, scores: _openai_penalties(ids[0, n_prompt:], scores, config))
        if not config.greedy:
            procs.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k:
                procs.append(TopKLogitsWarper(config.top_k))
            if config.top_p < 1.0:
                procs.append(TopPLogitsWarper(config.top_p))
        return procs

    def _reuse(self, prompt_ids: list[int]) -> int:
        return self.kv.reuse(prompt_ids, self.prefix_cache and self._cache is not None)

    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig, stats: EngineStats,
                      image=None) -> Iterator[int]:  # a text model: its prompts carry no image
        from transformers import DynamicCache

        torch = self.torch
        gen = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        procs = self._processors(config, len(prompt_ids))
        reused = stats.reused = self._reuse(prompt_ids)
        if self._cache is None:
            self._cache = DynamicCache()
        stats.cache_tokens_before = self._cache.get_seq_length()  # transformers' own count
        seen = torch.tensor([prompt_ids])
        step = torch.tensor([prompt_ids[reused:]])
        with torch.no_grad():
            for _ in range(config.max_new_tokens):
                out = self.model(input_ids=step, past_key_values=self._cache, use_cache=True)
                self.kv.extend(step[0].tolist())
                logits = procs(seen, out.logits[:, -1, :].float())
                if config.greedy:
                    tok = int(logits.argmax(-1))
                else:
                    tok = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
                yield tok
                step = torch.tensor([[tok]])
                seen = torch.cat([seen, step], dim=1)
