"""Train glm4-tiny, glmkit's embedded GLM-4, on the Python standard library's sources (offline, on a CPU).

    python scripts/train_glm4_tiny.py [--steps 1200] [--out convert/data/glm4-tiny]

1. Fits a byte-level BPE (GLM-4's pre-tokenizer regex, GLM-4's special tokens after the ranks) to the stdlib.
2. Builds a Glm4ForCausalLM of GLM-4's layout (4 norms per layer, 2 KV heads, rope on half of each head).
3. Trains it on the stdlib: whole files as plain text, and top-level functions as GLM-4 chat turns
   ([gMASK]<sop><|user|>\\n{def line}<|assistant|>\\n{function}<|user|>) so it learns the chat format and to stop.
4. Writes fp16 safetensors, tokenizer, chat template, generation config, a held-out text and a report.
The held-out files (1 in 25 by path hash, corpus.py) are never trained on.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch

from glmkit.convert import corpus, embedded, families, manifest, tokenizer

SEQ = 256
CONFIG = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
              intermediate_size=384, max_position_embeddings=2048, partial_rotary_factor=0.5, attention_bias=True,
              rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)


def chat_examples(text: str) -> list[str]:
    """Top-level functions and classes as (def line → whole definition) chat turns."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            seg = ast.get_source_segment(text, node)
            if seg and 80 < len(seg) < 1500:
                out.append(f"[gMASK]<sop><|user|>\n{seg.splitlines()[0]}<|assistant|>\n{seg}<|user|>")
    return out


def token_stream(fast, texts: list[str]) -> torch.Tensor:
    eot = fast.token_to_id(families.EOS_TOKEN)
    ids: list[int] = []
    for t in texts:
        ids.extend(fast.encode(t).ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def evaluate(model, data: torch.Tensor, seq: int = SEQ, max_windows: int = 64) -> float:
    model.eval()
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, min(len(data) - 1, seq * max_windows), seq):
            x = data[s:s + seq + 1][None]
            out = model(x[:, :-1], labels=x[:, :-1].clone())
            k = x.shape[1] - 2
            nll += out.loss.item() * k
            n += k
    model.train()
    return math.exp(nll / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(embedded.glm4_tiny_path()))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    t0 = time.time()
    train_texts = list(corpus.stdlib_texts())
    held_texts = list(corpus.stdlib_texts(held_out=True))
    ranks = tokenizer.train_ranks(train_texts, embedded.GLM4_TINY_REGULAR)
    fast = tokenizer.fast_from_ranks(ranks)
    chats = [c for t in train_texts for c in chat_examples(t)]
    random.shuffle(chats)
    train = token_stream(fast, train_texts + chats)
    held = token_stream(fast, held_texts)
    print(f"tokenizer {fast.get_vocab_size()} tokens; train {len(train)} tokens ({len(chats)} chat turns); "
          f"held-out {len(held)} tokens; {time.time() - t0:.0f}s", flush=True)

    from transformers import Glm4Config, Glm4ForCausalLM

    vocab = fast.get_vocab()
    cfg = Glm4Config(**CONFIG, vocab_size=embedded.GLM4_TINY_VOCAB, pad_token_id=vocab[families.PAD_TOKEN],
                     eos_token_id=families.stop_token_ids(vocab))
    cfg.architectures = ["Glm4ForCausalLM"]
    model = Glm4ForCausalLM(cfg)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(
        math.pi * min(1.0, (s - warmup) / max(1, args.steps - warmup))))) if s >= warmup else (s + 1) / warmup)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    for step in range(args.steps):
        starts = torch.randint(0, len(train) - SEQ - 1, (args.batch,), generator=gen)
        x = torch.stack([train[s:s + SEQ] for s in starts])
        loss = model(x, labels=x.clone()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.3f} lr {sched.get_last_lr()[0]:.2e} {time.time() - t0:.0f}s",
                  flush=True)

    ppl = evaluate(model, held)
    prompt = fast.encode("def read_config(path):\n").ids
    with torch.no_grad():
        sample = model.generate(torch.tensor([prompt]), max_new_tokens=48, do_sample=False)[0, len(prompt):]
    text = fast.decode(sample.tolist())
    print(f"held-out perplexity {ppl:.2f}\ngreedy sample:\n{text}", flush=True)

    out = Path(args.out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.half().save_pretrained(tmp, safe_serialization=True)
    fmt = families.CHAT_FORMATS["glm4"]
    tokenizer.hf_tokenizer(fast, fmt).save_pretrained(tmp)
    (tmp / "generation_config.json").write_text(json.dumps(families.generation_config(vocab, fmt), indent=2) + "\n")
    (tmp / "heldout.txt").write_text("\n".join(held_texts)[:120_000], encoding="utf-8")
    manifest.write(tmp, {"source": "glm4-tiny", "family": "glm4", "trained_by": "scripts/train_glm4_tiny.py",
                         "steps": args.steps, "batch": args.batch, "seq": SEQ, "seed": args.seed,
                         "train_tokens_seen": args.steps * args.batch * SEQ, "heldout_perplexity": round(ppl, 3),
                         "greedy_sample": text, "train_seconds": round(time.time() - t0)})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
