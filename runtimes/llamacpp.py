"""llama.cpp through llama-cpp-python: a GGUF file, decoded with llama.cpp's C API (llama_decode, its sampler chain).

The KV cache is kept between calls: a prompt that shares a prefix with what the context holds (the next turn of
a chat) prefills only the rest, as llama-server's slots do. With parallel=N the context holds N sequences, each
with its own KV and the runtime's whole context length, and every active generation advances in one llama_decode
per step (llama-server's slots: one sampler per sequence, the free slot whose KV shares most of the prompt).
The batch lives in runtimes/llamacpp_batch.py; with speculation (runtimes/speculative.py) a pass verifies a token and
its proposals in one llama_decode.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator
from pathlib import Path

from glmkit.glm4.errors import GlmkitError

from .base import Runtime
from .batching import Scheduler
from .capabilities import SPECULATIVE, Capabilities
from .context import default_context, kv_bytes_per_token
from .cstdio import captured_c_output
from .kv import HeldKV
from .llamacpp_batch import DraftSequences, Sequences
from .promptcache import PromptCache
from .speculative import PROMPT_LOOKUP, NgramLookup, Pacer, Speculation, same_vocabulary
from .types import EngineStats, GenerationConfig

CAPABILITIES = Capabilities(
    constrained=True, penalties=True, kv_cache_types=("f16", "f32", "q8_0"), kv_cache_reduced=("f16", "q8_0"),
    batching=True, options=("n_ctx", "threads", "prefix_cache", "kv_cache", "flash_attn", "n_batch", "parallel",
                            "prompt_cache_mb", *SPECULATIVE))
KV_TYPES = CAPABILITIES.kv_cache_types


def corrupt_gguf(path) -> GlmkitError:
    return GlmkitError(f"{path}: truncated or corrupt GGUF; re-create it with glm-convert SRC --to gguf")


@contextlib.contextmanager
def vocab_only(path):
    """llama.cpp's model of a GGUF's metadata and vocabulary, without the weights (a fraction of a second)."""
    import llama_cpp as lc

    params = lc.llama_model_default_params()
    params.vocab_only = True
    with captured_c_output():  # the loader's notes, not for the user
        model = lc.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise corrupt_gguf(path)
    try:
        yield model
    finally:
        lc.llama_model_free(model)


def is_gguf(path) -> bool:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        return False
    with p.open("rb") as f:  # the magic only: a 9B GGUF is 18 GB
        return f.read(4) == b"GGUF"


def gguf_vocabulary(path) -> list[str]:
    """Every token's text as llama.cpp reads it from the GGUF (what a draft must share with its model)."""
    import llama_cpp as lc

    with vocab_only(path) as model:
        vocab = lc.llama_model_get_vocab(model)
        return [lc.llama_vocab_get_text(vocab, t).decode("utf-8", "replace")
                for t in range(lc.llama_vocab_n_tokens(vocab))]


def gguf_hparams(path) -> dict:
    """The file's context length and KV shape, from its metadata as llama.cpp reads it (gguf-py's reader parsed
    every field, the vocabulary's 151,552 entries included: 4.7 s a load, this 0.2 s)."""
    import llama_cpp as lc

    with vocab_only(path) as model:
        def meta(key: str) -> str | None:
            buf = ctypes.create_string_buffer(64)
            return buf.value.decode() if lc.llama_model_meta_val_str(model, key.encode(), buf, len(buf)) >= 0 else None

        arch = meta("general.architecture") or ""

        def get(key, default=None):
            try:
                return int(meta(f"{arch}.{key}"))
            except (TypeError, ValueError):  # absent, or per-layer (an array)
                return default

        heads = get("attention.head_count", 1)
        return {"context_length": get("context_length"), "layers": get("block_count", 0),
                "kv_heads": get("attention.head_count_kv", heads),
                "head_dim": get("attention.key_length") or (get("embedding_length", 0) // max(1, heads))}


class LlamaCppRuntime(Runtime):
    backend = "llamacpp"
    capabilities = CAPABILITIES

    def __init__(self, path, n_ctx: int | None = None, threads: int | None = None, n_batch: int = 512,
                 kv_cache: str = "f16", flash_attn: bool = True, prefix_cache: bool = True,
                 model_name: str | None = None, parallel: int = 1, prompt_cache_mb: int = 1024,
                 speculative: str | None = None, draft: str | None = None, draft_tokens: int | None = None,
                 ngram_size: int | None = None):
        import llama_cpp

        from glmkit.glm4 import families

        from .tokenizer import from_llama

        if kv_cache not in KV_TYPES:
            raise GlmkitError(f"kv_cache {kv_cache}: choose one of {', '.join(KV_TYPES)}")
        if kv_cache == "q8_0" and not flash_attn:
            raise GlmkitError("kv_cache q8_0 needs flash attention in llama.cpp; drop --no-flash-attn")
        if not 1 <= parallel <= llama_cpp.llama_max_parallel_sequences():
            raise GlmkitError(f"parallel {parallel}: llama.cpp runs 1 to "
                              f"{llama_cpp.llama_max_parallel_sequences()} sequences at once")
        self.llama_cpp = llama_cpp
        self.n_batch = n_batch
        self.flash_attn = flash_attn
        self.prefix_cache = prefix_cache
        self.speculation = Speculation.from_options(speculative, draft, draft_tokens, ngram_size)
        if self.speculation and self.speculation.draft:
            if not is_gguf(self.speculation.draft):
                raise GlmkitError(f"draft {self.speculation.draft}: a GGUF model takes a GGUF draft; convert it "
                                  "with glm-convert DRAFT --to gguf")
            same_vocabulary(gguf_vocabulary(path), gguf_vocabulary(self.speculation.draft), str(path),
                            self.speculation.draft)
        hp = gguf_hparams(path)
        n_ctx = default_context(hp["context_length"] or 4096, n_ctx, kv_cache, hp["layers"], hp["kv_heads"],
                                hp["head_dim"], parallel)
        kv = getattr(llama_cpp, f"GGML_TYPE_{kv_cache.upper()}")
        #: llama-cpp-python's Llama object and its llama_context pointer, for callers that drive the C API
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx if parallel == 1 else 256, n_batch=n_batch,
                                       n_threads=threads or os.cpu_count(), type_k=kv, type_v=kv,
                                       flash_attn=flash_attn, verbose=False)
        except ValueError:  # metadata read, weights cut short
            raise corrupt_gguf(path) from None
        self.ctx = self.llm._ctx.ctx
        # sequence 0's KV (self.ctx is read at each call: parallel=N replaces it), cleared as cells marked free
        self.kv = HeldKV(lambda: llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), False),
                         lambda n: llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.ctx), 0, n, -1))
        self._scheduler = None
        if parallel > 1:  # a context of its own: llama-cpp-python's Llama takes no sequence count
            params = self.llm.context_params
            params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * parallel, parallel, False
            params.n_batch = params.n_ubatch = max(n_batch, parallel)
            self.ctx = llama_cpp.llama_init_from_model(self.llm._model.model, params)
            if not self.ctx:
                raise GlmkitError(f"llama.cpp could not make a context of {parallel} x {n_ctx} tokens; "
                                  "lower --max-concurrency or --n-ctx")
            n_ctx = llama_cpp.llama_n_ctx_seq(self.ctx)
        tok = from_llama(self.llm)
        fmt = families.chat_format(name_or_path=model_name or str(path), template=tok.chat_template)
        # llama.cpp rounds its context up (to 256); glmkit holds to the length asked for
        super().__init__(tok, fmt, min(n_ctx, self.llm.n_ctx() if parallel == 1 else n_ctx),
                         model_name or str(path))
        self.kv_shape = (hp["layers"], hp["kv_heads"], hp["head_dim"])
        self.kv_bytes_per_token = kv_bytes_per_token(*self.kv_shape, kv_cache)
        self._verify = llama_cpp.llama_batch_init(max(n_batch, 65), 0, 1)  # a speculation's [token, proposals]
        self._draft = None
        if self.speculation and self.speculation.draft:  # its own context, as long as the model's
            self._draft = LlamaCppRuntime(self.speculation.draft, n_ctx=self.context_length, threads=threads,
                                          n_batch=n_batch, kv_cache=kv_cache, flash_attn=flash_attn)
        if parallel > 1:
            self.parallel = parallel
            cache = PromptCache(prompt_cache_mb * 2**20) if prompt_cache_mb > 0 else None
            drafter = DraftSequences(self._draft, parallel) if self._draft is not None else None
            self._scheduler = Scheduler(Sequences(self, parallel, cache, drafter), "glmkit-llamacpp")

    @functools.cached_property
    def _turn_markers(self) -> list[int]:
        """Control tokens that do not end a turn (`<|assistant|>`, `<|system|>`, `[gMASK]`, …). llama.cpp's grammar
        reads a control token as its text, so one could pass as a JSON string's characters and split a call or
        open a turn inside an answer; a constrained answer bans them (the grammar already decides when an
        end-of-generation token may come)."""
        lc = self.llama_cpp
        vocab = lc.llama_model_get_vocab(self.llm._model.model)
        return [t for t in range(lc.llama_vocab_n_tokens(vocab))
                if lc.llama_vocab_is_control(vocab, t) and not lc.llama_vocab_is_eog(vocab, t)]

    def _sampler(self, config: GenerationConfig, prompt_ids: list[int]):
        """llama.cpp's own sampler chain, in C: llama-cpp-python's Llama.generate samples in Python over the whole
        151,552-token vocabulary every step, which costs more than the forward pass of a small model. Order:
        grammar → penalties → top-k → temperature → top-p → draw, the distribution GenerationConfig documents."""
        lc = self.llama_cpp
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        vocab = lc.llama_model_get_vocab(self.llm._model.model)
        n_vocab = lc.llama_vocab_n_tokens(vocab)
        if config.structure is not None:
            banned = self._turn_markers
            bias = (lc.llama_logit_bias * len(banned))(*(lc.llama_logit_bias(t, float("-inf")) for t in banned))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(n_vocab, len(banned), bias))
            grammar = lc.llama_sampler_init_grammar(vocab, config.structure.grammar.encode(), b"root")
            if not grammar:
                lc.llama_sampler_free(chain)
                raise GlmkitError("llama.cpp could not compile the grammar for this response format")
            lc.llama_sampler_chain_add(chain, grammar)
        if config.repetition_penalty != 1.0:  # over the prompt and the answer, as transformers penalises
            penalties = lc.llama_sampler_init_penalties(n_vocab, self.context_length, config.repetition_penalty,
                                                        0.0, 0.0)
            for t in prompt_ids:
                lc.llama_sampler_accept(penalties, t)
            lc.llama_sampler_chain_add(chain, penalties)
        if config.frequency_penalty or config.presence_penalty:  # OpenAI's: over the answer only
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(
                n_vocab, self.context_length, 1.0, config.frequency_penalty, config.presence_penalty))
        if config.greedy:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        if config.top_k:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(config.top_k))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(config.temperature))
        if config.top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(config.top_p, 1))
        seed = config.seed if config.seed is not None else lc.LLAMA_DEFAULT_SEED
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def _decode(self, tokens: list[int]) -> None:
        lc = self.llama_cpp
        for a in range(0, len(tokens), self.n_batch):
            chunk = tokens[a:a + self.n_batch]
            arr = (lc.llama_token * len(chunk))(*chunk)
            if lc.llama_decode(self.ctx, lc.llama_batch_get_one(arr, len(chunk))) != 0:
                self.reset_cache()
                raise GlmkitError(f"llama.cpp could not decode {len(chunk)} tokens at position {len(self.kv)} "
                                  f"of a {self.context_length}-token context")
            self.kv.extend(chunk)

    def reset_cache(self) -> None:
        self.kv.drop()

    def _reuse(self, prompt_ids: list[int]) -> int:
        # nothing shared is a clear, not a removal: llama.cpp then places the new tokens from the first cell
        # again, and attention spans only them (4 % of decode speed with flash attention)
        return self.kv.reuse(prompt_ids, self.prefix_cache)

    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig, stats: EngineStats,
                      image=None) -> Iterator[int]:  # a text model: its prompts carry no image
        if self._scheduler is not None:
            yield from self._scheduler.submit(prompt_ids, config, stats)
            return
        lc = self.llama_cpp
        lc.llama_perf_context_reset(self.ctx)
        reused = stats.reused = self._reuse(prompt_ids)
        sampler = self._sampler(config, prompt_ids)
        try:
            # the last prompt token alone, cold or warm: its logits choose the first answer token, and a token
            # computed inside a large batch can round differently from one decoded alone (a greedy answer then
            # differed between a cold prompt and the same prompt found in the cache)
            self._decode(prompt_ids[reused:-1])
            self._decode(prompt_ids[-1:])
            if self.speculation:  # its verification passes count as llama.cpp's prompt evaluation: report the
                p = lc.llama_perf_context(self.ctx)  # prompt's figures alone, and no decode rate of llama.cpp's
                stats.prefill_ms, stats.prompt_tokens_evaluated = p.t_p_eval_ms, p.n_p_eval
                yield from self._speculate(prompt_ids, config, stats, sampler)
                return
            for n in range(config.max_new_tokens):
                tok = lc.llama_sampler_sample(sampler, self.ctx, -1)
                yield tok
                if n + 1 < config.max_new_tokens:
                    self._decode([tok])  # only when the caller asks for the next token
        finally:
            lc.llama_sampler_free(sampler)
            if not self.speculation:
                p = lc.llama_perf_context(self.ctx)
                stats.prefill_ms, stats.prompt_tokens_evaluated = p.t_p_eval_ms, p.n_p_eval
                stats.decode_tps = p.n_eval / (p.t_eval_ms / 1000) if p.t_eval_ms else 0.0

    def _propose(self, history: list[int], lookup: NgramLookup | None, k: int) -> list[int]:
        """Up to k tokens to follow `history` (its last token not yet decoded): prompt lookup's, or the draft
        model's greedy continuation, decoded in the draft's own context (its KV follows the conversation)."""
        if lookup is not None:
            return lookup.propose(k)
        d, lc = self._draft, self.llama_cpp
        assert d is not None  # without prompt lookup, a draft model was loaded
        n = d._reuse(history)
        d._decode(history[n:])
        greedy = lc.llama_sampler_init_greedy()
        try:
            out = [lc.llama_sampler_sample(greedy, d.ctx, -1)]
            while len(out) < k and out[-1] not in d.stop_ids:
                d._decode(out[-1:])
                out.append(lc.llama_sampler_sample(greedy, d.ctx, -1))
        finally:
            lc.llama_sampler_free(greedy)
        return out

    def _speculate(self, prompt_ids: list[int], config: GenerationConfig, stats: EngineStats,
                   sampler) -> Iterator[int]:
        """Decoding with proposals (see runtimes/speculative.py): one llama_decode over [token, p1 … pk] with
        logits at each, the request's own sampler picks each next token in order, a proposal is kept while it
        equals the pick; the KV of the rest is removed, so the context holds exactly the emitted text."""
        lc, spec, b = self.llama_cpp, self.speculation, self._verify
        assert spec is not None  # only called when speculating
        lookup = NgramLookup(spec.ngram, prompt_ids) if spec.kind == PROMPT_LOOKUP else None
        stats.proposed = stats.accepted = 0
        pacer = Pacer(spec.tokens)
        history = list(prompt_ids)

        def emitted(t: int) -> int:  # the tokens still to make after t: the conversation and the lookup grow
            history.append(t)
            if lookup is not None:
                lookup.extend([t])
            return config.max_new_tokens - (len(history) - len(prompt_ids))

        tok = lc.llama_sampler_sample(sampler, self.ctx, -1)
        while True:
            yield tok
            if (left := emitted(tok)) <= 0:
                return
            k = min(pacer.want(), left - 1, self.context_length - len(self.kv) - 1)
            drafts = self._propose(history, lookup, k) if k > 0 else []
            stats.proposed += len(drafts)
            kept_before = stats.accepted
            base = len(self.kv)
            for j, t in enumerate([tok] + drafts):
                b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = t, base + j, 1, True
                b.seq_id[j][0] = 0
            b.n_tokens = len(drafts) + 1
            if lc.llama_decode(self.ctx, b) != 0:
                self.reset_cache()
                raise GlmkitError(f"llama.cpp could not decode {b.n_tokens} tokens at position {base}")
            self.kv.extend([tok] + drafts)
            keep = base + 1  # the KV that matches what was emitted: tok, then each accepted proposal
            try:
                for j in range(len(drafts) + 1):
                    tok = lc.llama_sampler_sample(sampler, self.ctx, j)
                    if j == len(drafts) or tok != drafts[j]:
                        break  # tok is the target's own choice: emitted next, decoded in the next pass
                    keep += 1
                    stats.accepted += 1
                    yield tok
                    if emitted(tok) <= 0:
                        return
            finally:  # also when the caller stops inside the accepted run (a stop token, a stop string)
                pacer.kept(len(drafts), stats.accepted - kept_before)
                self.kv.keep(keep)

    def prompt_cache_stats(self) -> dict | None:
        """The host-RAM prompt cache behind parallel=N (None without one)."""
        cache = self._scheduler.batch.cache if self._scheduler is not None else None
        return cache.stats() if cache is not None else None

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler.batch.close()
            self.llama_cpp.llama_free(self.ctx)
            self._scheduler = None
        if self._verify is not None:
            self.llama_cpp.llama_batch_free(self._verify)
            self._verify = None
        if self._draft is not None:
            self._draft.close()
            self._draft = None
        self.llm.close()
