"""The PyTorch reference: transformers on the CPU, decoding token by token with the KV cache."""

from __future__ import annotations

from typing import Iterator

from .base import GenerationConfig, Runtime

DTYPES = ("float32", "bfloat16", "float16")


class TransformersRuntime(Runtime):
    backend = "transformers"

    def __init__(self, path, dtype: str = "float32", threads: int | None = None, model_name: str | None = None):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from glmkit.convert import GlmkitError, families

        from .tokenizer import from_hf

        if dtype not in DTYPES:
            raise GlmkitError(f"dtype {dtype}: choose one of {', '.join(DTYPES)}")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.dtype = dtype
        cfg = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype),
                                                          trust_remote_code=False).eval()
        tok = from_hf(path)
        fmt = families.chat_format(cfg.to_dict(), model_name or str(path), tok.chat_template)
        super().__init__(tok, fmt, int(cfg.max_position_embeddings), model_name or str(path))

    def _processors(self, config: GenerationConfig):
        from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                  TopKLogitsWarper, TopPLogitsWarper)

        procs = LogitsProcessorList()
        if config.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
        if not config.greedy:
            procs.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k:
                procs.append(TopKLogitsWarper(config.top_k))
            if config.top_p < 1.0:
                procs.append(TopPLogitsWarper(config.top_p))
        return procs

    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig) -> Iterator[int]:
        torch = self.torch
        gen = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        procs = self._processors(config)
        seen = torch.tensor([prompt_ids])
        step, past = seen, None
        with torch.no_grad():
            for _ in range(config.max_new_tokens):
                out = self.model(input_ids=step, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = procs(seen, out.logits[:, -1, :].float())
                if config.greedy:
                    tok = int(logits.argmax(-1))
                else:
                    tok = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
                yield tok
                step = torch.tensor([[tok]])
                seen = torch.cat([seen, step], dim=1)
