"""A GGUF file, run by llama.cpp (llama-cpp-python)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from glmkit.glm4.errors import GlmkitError

from ..llamacpp import LlamaCppRuntime, is_gguf
from .base import ArtifactKind


class Gguf(ArtifactKind):
    name = "gguf"
    backend = "llamacpp"
    label = "a GGUF model"
    capabilities = LlamaCppRuntime.capabilities
    own_chat_path = "llama-cpp-python create_chat_completion"

    def claims(self, path: Path) -> bool:
        return path.suffix == ".gguf" or is_gguf(path)

    def check(self, model: str) -> None:
        p = Path(str(model)).expanduser()
        if not p.is_file():
            raise GlmkitError(f"{model}: no such GGUF file; convert one with glm-convert SRC --to gguf")
        if not is_gguf(p):
            raise GlmkitError(f"{model}: not a GGUF file (no GGUF magic); re-create it with glm-convert --to gguf")

    def open(self, model: str, device: str = "CPU", **options):
        return LlamaCppRuntime(model, model_name=str(model), **options)

    def logits(self, model, ids, kv_cache=None, pixels=None) -> np.ndarray:
        import llama_cpp

        self.no_image(pixels)
        kv = getattr(llama_cpp, f"GGML_TYPE_{(kv_cache or 'f32').upper()}")
        llm = llama_cpp.Llama(model_path=str(model), n_ctx=len(ids) + 8, n_batch=len(ids) + 8, logits_all=True,
                              verbose=False, n_threads=os.cpu_count() or 1, type_k=kv, type_v=kv,
                              flash_attn=kv_cache == "q8_0")  # a quantized V cache needs flash attention
        try:
            llm.eval(ids)
            return np.array(llm.scores[: len(ids)], dtype=np.float32)
        finally:
            llm.close()

    def token_ids(self, model, texts):
        """llama.cpp's tokenizer through its C API on a vocabulary-only load (no context: nothing to warn about)."""
        import llama_cpp as lc

        from ..llamacpp import vocab_only

        with vocab_only(model) as m:
            vocab = lc.llama_model_get_vocab(m)
            out = []
            for t in texts:
                data = t.encode("utf-8")
                buf = (lc.llama_token * (len(data) + 8))()
                n = lc.llama_tokenize(vocab, data, len(data), buf, len(buf), False, False)
                out.append(list(buf[:n]))
            return out

    def weight_bytes(self, model, runtime=None) -> int:
        from gguf import GGUFReader

        tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(model)).tensors}
        tied = "output.weight" not in tensors
        return sum(n for name, n in tensors.items() if tied or name != "token_embd.weight")

    @staticmethod
    def raw_stamps(runtime, ids: list[int], gen: int) -> list[float]:
        """llama.cpp's C API alone: llama_decode and its greedy sampler, a stamp per token."""
        import llama_cpp as lc

        ctx = runtime.ctx
        runtime.reset_cache()  # a cold start, as glmkit's side of the pair has (every prompt differs)
        sampler = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(sampler, lc.llama_sampler_init_greedy())

        def decode(tokens: list[int]) -> None:
            arr = (lc.llama_token * len(tokens))(*tokens)  # held in a name: the batch only points at it
            if lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(tokens))) != 0:
                raise RuntimeError(f"llama_decode failed on {len(tokens)} tokens")

        start = time.perf_counter()
        n_batch = runtime.llm.n_batch
        for i in range(0, len(ids), n_batch):
            decode(ids[i:i + n_batch])
        stamps: list[float] = []
        for n in range(gen):
            tok = lc.llama_sampler_sample(sampler, ctx, -1)
            stamps.append(time.perf_counter())
            if n + 1 < gen:
                decode([tok])
        lc.llama_sampler_free(sampler)
        runtime.reset_cache()
        return [start] + stamps

    @staticmethod
    def own_chat(runtime, model: str):
        """llama-cpp-python's own chat path on a second Llama of the same file and context settings (it reuses
        the common prefix of its previous prompt)."""
        import llama_cpp

        llm = llama_cpp.Llama(model_path=str(model), n_ctx=runtime.context_length, n_batch=runtime.n_batch,
                              n_threads=runtime.llm.n_threads, verbose=False, flash_attn=runtime.flash_attn)

        def turn(messages: list[dict], answer_tokens: int) -> tuple[float, str]:
            t0 = time.perf_counter()
            first, parts = None, []
            chat: Any = llm.create_chat_completion  # its TypedDicts do not take plain dicts
            for chunk in chat(messages, max_tokens=answer_tokens, temperature=0.0, stream=True):
                delta = chunk["choices"][0]["delta"].get("content")
                if delta:
                    first = first or time.perf_counter()
                    parts.append(delta)
            return ((first or time.perf_counter()) - t0) * 1000, "".join(parts)

        return turn, llm.close

    @staticmethod
    @contextlib.contextmanager
    def pass_timer(model: str, context: int, threads: int | None):
        """One llama_decode over n tokens after `context`, every position with logits (a speculative pass)."""
        import llama_cpp as lc

        with LlamaCppRuntime(model, threads=threads, prefix_cache=False) as rt:
            ids = (rt.tokenizer.encode("def main():\n    return 0\n") * context)[:context + 17]
            b = lc.llama_batch_init(context, 0, 1)

            def decode(tokens: list[int], start: int) -> None:
                for j, t in enumerate(tokens):
                    b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = t, start + j, 1, True
                    b.seq_id[j][0] = 0
                b.n_tokens = len(tokens)
                if lc.llama_decode(rt.ctx, b) != 0:
                    raise GlmkitError(f"llama.cpp could not decode {len(tokens)} tokens")

            mem = lc.llama_get_memory(rt.ctx)

            def timed(n: int) -> float:
                rt.reset_cache()
                decode(ids[:context], 0)
                # once untimed: llama.cpp rebuilds its compute graph when the batch size changes (0.5 ms, more
                # than a small model's whole step), and a decode loop repeats the same size
                decode(ids[context:context + n], context)
                lc.llama_memory_seq_rm(mem, 0, context, -1)
                t0 = time.perf_counter()
                decode(ids[context:context + n], context)
                return (time.perf_counter() - t0) * 1000

            try:
                yield timed
            finally:
                lc.llama_batch_free(b)
