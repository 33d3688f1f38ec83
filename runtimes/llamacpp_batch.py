"""llama.cpp's parallel=N: N KV sequences in one llama_context, stepped together by runtimes/batching.py's
scheduler (llama-server's slots: one sampler per sequence, the free slot whose KV shares most of the prompt, a
host-RAM cache for evicted conversations), with speculation's proposals verified in the same llama_decode.
"""

from __future__ import annotations

import ctypes

from glmkit.glm4.errors import GlmkitError

from .kv import HeldKV
from .promptcache import MIN_TOKENS, PromptCache
from .speculative import NgramLookup, Pacer


class _Seq:
    """One generation in a shared context: its sequence id, the tokens it still has to feed, its sampler, and with
    prompt lookup its n-gram index."""

    def __init__(self, seq: int, feed: list[int], pos: int, sampler, lookup: NgramLookup | None = None,
                 pacer: Pacer | None = None):
        self.seq, self.feed, self.pos, self.sampler, self.lookup, self.pacer = seq, feed, pos, sampler, lookup, pacer
        self.made = 0


def sequence_kv(lc, mem, seq: int) -> HeldKV:
    """Sequence `seq` of a llama.cpp context with several: cleared and trimmed on its own."""
    return HeldKV(lambda: lc.llama_memory_seq_rm(mem, seq, -1, -1), lambda n: lc.llama_memory_seq_rm(mem, seq, n, -1))


class Sequences:
    """The Batch behind parallel=N (see runtimes/batching.py): N KV sequences in one llama_context.

    Each step puts one token of every decoding sequence into the batch, then fills the rest of n_batch with
    prompt chunks, so a long prompt arriving never stalls the others for more than a step."""

    def __init__(self, rt, n: int, cache: PromptCache | None = None, drafter=None):
        lc = rt.llama_cpp
        self.drafter = drafter  # a draft model's sequences, one per ours
        self.cache = cache  # evicted sequences' KV in host RAM
        self.rt, self.lc = rt, lc
        self.n_batch = max(rt.n_batch, n)
        self.batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self.mem = lc.llama_get_memory(rt.ctx)
        self.free = list(range(n))
        self.held = {s: sequence_kv(lc, self.mem, s) for s in range(n)}  # what each sequence's KV holds

    def start(self, req) -> bool:
        if not self.free:
            return False
        ids = req.prompt_ids
        # the free sequence whose KV shares the longest prefix with the prompt (the same chat's earlier turn)
        seq = max(self.free, key=lambda s: self.held[s].shared(ids))
        n = self.held[seq].shared(ids) if self.rt.prefix_cache else 0
        if self.cache is not None and self.rt.prefix_cache:
            hit = self.cache.best(ids, n)  # a conversation evicted earlier shares more: restore it here
            if hit is not None or len(self.held[seq]) - n >= MIN_TOKENS:
                self._save(seq)  # what this sequence held goes to the cache before it is overwritten
            if hit is not None:
                n = hit[2] if self._restore(seq, hit[0], hit[1]) else 0
                self.cache.restored_tokens += n
        n = self.held[seq].keep(n)
        self.free.remove(seq)
        spec = self.rt.speculation
        lookup = NgramLookup(spec.ngram, ids) if spec else None
        req.state = _Seq(seq, list(ids[n:]), n, self.rt._sampler(req.config, ids), lookup,
                         Pacer(spec.tokens) if spec else None)
        req.stats.reused = n
        if spec:
            req.stats.proposed = req.stats.accepted = 0
        return True

    def step(self, active) -> list:
        lc, b = self.lc, self.batch
        order = sorted(active, key=lambda r: len(r.state.feed) > 1)  # decoding sequences first
        room, k, outputs = self.n_batch, 0, []
        wants = {}  # decoding sequences: how many proposals to verify with their token
        for req in order:
            s = req.state
            if self.rt.speculation and s.made and len(s.feed) == 1:
                n = min(s.pacer.want(), req.config.max_new_tokens - s.made - 1,
                        self.rt.context_length - s.pos - 1, self.n_batch // max(1, len(active)) - 1)
                if n > 0:
                    wants[req] = n
        if self.drafter is not None and wants:
            proposals = self.drafter.propose({req.state.seq: (self.held[req.state.seq].ids + req.state.feed, n)
                                              for req, n in wants.items()})
        else:
            proposals = {req.state.seq: req.state.lookup.propose(n) for req, n in wants.items()}
        for req in order:
            s = req.state
            drafts = proposals.get(s.seq, []) if req in wants else []
            take = (s.feed + drafts)[:room]
            if not take:
                continue
            first = None
            for j, t in enumerate(take):
                b.token[k], b.pos[k], b.n_seq_id[k] = t, s.pos + j, 1
                b.seq_id[k][0] = s.seq
                b.logits[k] = j >= len(s.feed) - 1  # logits where the next token is chosen (and each proposal's)
                if b.logits[k] and first is None:
                    first = k
                k += 1
            if first is not None:
                outputs.append((req, first, drafts))
            s.feed, s.pos, room = s.feed[len(take):], s.pos + len(take), room - len(take)
            self.held[s.seq].extend(take)
            if room == 0:
                break
        b.n_tokens = k
        if lc.llama_decode(self.rt.ctx, b) != 0:
            raise GlmkitError(f"llama.cpp could not decode a batch of {k} tokens for {len(active)} sequences")
        results = []
        for req, i, drafts in outputs:
            s, made, done = req.state, [], False
            for j in range(len(drafts) + 1):  # the request's sampler picks each next token; proposals kept while
                tok = lc.llama_sampler_sample(s.sampler, self.rt.ctx, i + j)  # they equal its picks
                made.append(tok)
                s.made += 1
                done = s.made >= req.config.max_new_tokens or (tok in self.rt.stop_ids and not req.config.ignore_eos)
                if done or j == len(drafts) or tok != drafts[j]:
                    break
            if drafts:
                accepted = next((j for j, (a, d) in enumerate(zip(made, drafts)) if a != d),
                                min(len(made), len(drafts)))
                req.stats.proposed += len(drafts)
                req.stats.accepted += accepted
                s.pacer.kept(len(drafts), accepted)
                keep = s.pos - len(drafts) + accepted  # the rejected proposals' KV goes
                if keep < s.pos:
                    if self.held[s.seq].keep(keep) != keep:
                        raise GlmkitError("llama.cpp could not remove the KV of rejected proposals")
                    s.pos = keep
            if s.lookup is not None:
                s.lookup.extend(made)
            if not done:
                s.feed = [made[-1]]
            results.append((req, made, done))
        return results

    def _save(self, seq: int) -> None:
        held, lc = self.held[seq].ids, self.lc
        if self.cache is None or not self.cache.worth_saving(held):
            return
        size = lc.llama_state_seq_get_size(self.rt.ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        got = lc.llama_state_seq_get_data(self.rt.ctx, buf, size, seq)
        if got:
            self.cache.put(held, bytes(buf)[:got])

    def _restore(self, seq: int, tokens: tuple[int, ...], data: bytes) -> bool:
        lc = self.lc
        self.held[seq].drop()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if not lc.llama_state_seq_set_data(self.rt.ctx, buf, len(data), seq):
            self.held[seq].drop()
            return False
        self.held[seq].hold(tokens)
        if self.cache is not None:
            self.cache.restored += 1
        return True

    def release(self, req) -> None:
        self.lc.llama_sampler_free(req.state.sampler)
        self.free.append(req.state.seq)

    def close(self) -> None:
        self.lc.llama_batch_free(self.batch)
        if self.drafter is not None:
            self.drafter.close()


class DraftSequences:
    """A draft model's N sequences for the batch: each follows its main sequence's conversation (its KV is cut
    back to the shared prefix, then the rest fed), and all propose their greedy continuations in one llama_decode
    per proposed token."""

    def __init__(self, draft, n: int):
        lc = draft.llama_cpp
        self.lc, self.draft = lc, draft
        params = draft.llm.context_params
        params.n_ctx, params.n_seq_max, params.kv_unified = draft.context_length * n, n, False
        params.n_batch = params.n_ubatch = self.n_batch = max(draft.n_batch, n)
        self.ctx = lc.llama_init_from_model(draft.llm._model.model, params)
        if not self.ctx:
            raise GlmkitError(f"llama.cpp could not make the draft's context of {n} x {draft.context_length} tokens")
        self.mem = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self.greedy = lc.llama_sampler_init_greedy()
        self.held = {s: sequence_kv(lc, self.mem, s) for s in range(n)}

    def propose(self, wants: dict[int, tuple[list[int], int]]) -> dict[int, list[int]]:
        """{seq: (its conversation, the last token not yet decoded; how many to propose)} → {seq: proposals}."""
        lc, b = self.lc, self.batch
        feed = {}
        for seq, (history, _) in wants.items():
            n = self.held[seq].keep(self.held[seq].shared(history))
            feed[seq] = history[n:]
        out: dict[int, list[int]] = {seq: [] for seq in wants}
        while feed:
            k, outputs = 0, {}
            for seq, tokens in list(feed.items()):
                take = tokens[:self.n_batch - k]
                for j, t in enumerate(take):
                    b.token[k], b.pos[k], b.n_seq_id[k] = t, len(self.held[seq]) + j, 1
                    b.seq_id[k][0] = seq
                    b.logits[k] = len(take) == len(tokens) and j == len(take) - 1
                    if b.logits[k]:
                        outputs[seq] = k
                    k += 1
                self.held[seq].extend(take)
                feed[seq] = tokens[len(take):]
                if k == self.n_batch:
                    break
            b.n_tokens = k
            if lc.llama_decode(self.ctx, b) != 0:
                raise GlmkitError(f"llama.cpp could not decode a batch of {k} tokens in the draft model")
            for seq, i in outputs.items():  # a sequence's next proposal, fed next round until it has enough
                tok = lc.llama_sampler_sample(self.greedy, self.ctx, i)
                out[seq].append(tok)
                del feed[seq]
                if len(out[seq]) < wants[seq][1] and tok not in self.draft.stop_ids:
                    feed[seq] = [tok]
            feed = {seq: t for seq, t in feed.items() if t}
        return out

    def close(self) -> None:
        self.lc.llama_sampler_free(self.greedy)
        self.lc.llama_batch_free(self.batch)
        self.lc.llama_free(self.ctx)
