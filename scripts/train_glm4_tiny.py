"""Train glm4-tiny, glmkit's embedded GLM-4, on the Python standard library's sources (offline, on a CPU).

    python scripts/train_glm4_tiny.py [--steps 1200] [--out sources/data/glm4-tiny]

1. Fits a byte-level BPE (GLM-4's pre-tokenizer regex, GLM-4's special tokens after the ranks) to the stdlib.
2. Builds a Glm4ForCausalLM of GLM-4's layout (4 norms per layer, 2 KV heads, rope on half of each head).
3. Trains it on the stdlib: whole files as plain text, and, as whole examples (a third of each batch), GLM-4 chat
   turns rendered by glmkit's own GLM-4 / Z1 templates:
   - top-level functions: `<|user|>\\n{def line}<|assistant|>\\n{function}<|user|>`, so it learns the format and
     to stop; the same under Z1's `<think>`, the docstring's first line as the thought. The `<think>` that opens a
     Z1 answer is not a target: Z1's template puts it in the prompt, and a non-Z1 chat must never learn to open a
     thought (one weights file serves both templates);
   - tool use in GLM-4-0414's format, with tools from a handful (get_weather(city), add(a, b), lookup(word)):
     a request that matches a tool → `name\\n{arguments copied from the request}<|observation|>`; the observation
     → an answer from it; a request for code with tools present → a plain answer;
   - repeat-with-change (`--edit-repeats`), as real GLM-4 answers copy their input: given a function, rename an
     identifier, switch its quotes, quote it back, or extract its docstring (glmkit.benchmarks.grounded: the
     requests glm-bench measures speculative decoding on, asked of held-out functions).
4. Writes fp16 safetensors, tokenizer, chat template, generation config, a held-out text and a report.
The held-out files (1 in 25 by path hash, corpus.py) are never trained on.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import random
import re
import shutil
import time
from pathlib import Path

import torch

from glmkit.benchmarks import grounded
from glmkit.common import manifest
from glmkit.glm4 import families
from glmkit.sources import corpus, embedded, tokenizer

SEQ = 256
SEQ_EXAMPLE = 320  # a tool example (schema as indented JSON, request, call) runs past 256 tokens
CONFIG = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
              intermediate_size=384, max_position_embeddings=2048, partial_rotary_factor=0.5, attention_bias=True,
              rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)


def _definitions(text: str):
    """(node, source) of each top-level function and class of a Python file."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            yield node, ast.get_source_segment(text, node)


def chat_examples(text: str) -> list[str]:
    """Top-level functions and classes as (def line → whole definition) chat turns."""
    return [f"[gMASK]<sop><|user|>\n{seg.splitlines()[0]}<|assistant|>\n{seg}<|user|>"
            for _, seg in _definitions(text) if seg and 80 < len(seg) < 1500]


TOOLS = {
    "get_weather": {"description": "Current weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    "add": {"description": "Add two numbers",
            "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                           "required": ["a", "b"]}},
    "lookup": {"description": "Look a word up in the dictionary",
               "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}},
}
CITIES = ("Paris", "London", "Berlin", "Madrid", "Rome", "Oslo", "Tokyo", "Lima", "Cairo", "Delhi", "Seoul", "Kyiv",
          "Lagos", "Quito", "Hanoi", "Dublin", "Vienna", "Prague", "Warsaw", "Lisbon", "Athens", "Zurich", "Boston",
          "Denver", "Austin", "Moscow", "Sydney", "Nairobi", "Havana", "Manila", "Bogota", "Riga", "Tallinn")
SKIES = ("clear", "cloudy", "rainy", "windy", "foggy", "snowy")
ASK = {
    "get_weather": ("What is the weather in {city}?", "Weather in {city}?", "How warm is it in {city} today?",
                    "Is it raining in {city}?", "Tell me the weather for {city}."),
    "add": ("What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}.", "Sum of {a} and {b}?"),
    "lookup": ("What does {word} mean?", "Look up the word {word}.", "Define {word}.", "Meaning of {word}?"),
}


def _arguments(name: str, rng: random.Random, words: list[str]) -> dict:
    if name == "get_weather":  # invented names too, so that it learns to copy rather than to recall
        city = rng.choice(CITIES) if rng.random() < 0.6 else "".join(rng.choice("bdfgklmnprstvz") + rng.choice(
            "aeiou") for _ in range(rng.randint(2, 4))).capitalize()
        return {"city": city}
    if name == "add":
        return {"a": rng.randint(0, 999), "b": rng.randint(0, 999)}
    return {"word": rng.choice(words)}


def _observation(name: str, args: dict, rng: random.Random, words: list[str]) -> tuple[str, str]:
    """(tool result as JSON, the answer that reads it)."""
    if name == "get_weather":
        t, sky = rng.randint(-20, 40), rng.choice(SKIES)
        return (json.dumps({"city": args["city"], "temperature": t, "sky": sky}),
                f"It is {t} °C and {sky} in {args['city']}.")
    if name == "add":
        total = args["a"] + args["b"]
        return json.dumps({"result": total}), f"{args['a']} + {args['b']} = {total}."
    meaning = " ".join(rng.sample(words, 3))
    return json.dumps({"word": args["word"], "definition": meaning}), f"{args['word']}: {meaning}."


def tool_examples(n: int, defs: list[tuple[str, str]], words: list[str], rng: random.Random) -> list[str]:
    """GLM-4-0414 tool use rendered by glmkit's GLM-4 template: calls, answers from observations, and plain answers
    to code requests when tools are present."""
    from glmkit.glm4 import template

    source = families.CHAT_FORMATS["glm4"].template
    out = []
    for _ in range(n):
        offered = rng.sample(sorted(TOOLS), rng.randint(1, 2))
        tools = [{"type": "function", "function": {"name": k, **TOOLS[k]}} for k in offered]
        kind = rng.random()
        if kind < 0.25:  # nothing to call: the request is for code
            line, seg = rng.choice(defs)
            out.append(template.render(source, [{"role": "user", "content": line}], tools) + f"\n{seg}<|user|>")
            continue
        name = rng.choice(offered)
        args = _arguments(name, rng, words)
        user = {"role": "user", "content": rng.choice(ASK[name]).format(**args)}
        call = json.dumps(args, ensure_ascii=False)
        if kind < 0.65:
            out.append(template.render(source, [user], tools) + f"{name}\n{call}<|observation|>")
        else:
            result, answer = _observation(name, args, rng, words)
            turns = [user, {"role": "assistant", "metadata": name, "content": call},
                     {"role": "observation", "content": result}]
            out.append(template.render(source, turns, tools) + f"\n{answer}<|user|>")
    return out


EDIT_MAX = 700  # characters of a function to edit: request and answer then fit in SEQ_EDIT
SEQ_EDIT = 512


def edit_examples(defs: list[tuple[str, str]], words: list[str], rng: random.Random) -> list[str]:
    """Repeat-with-change chat turns over the stdlib's shorter functions, one of each kind that applies."""
    out = []
    for _, seg in defs:
        if len(seg) > EDIT_MAX:
            continue
        for kind in grounded.EDITS:
            if (made := grounded.edit_request(kind, seg, rng, words)) is not None:
                user, answer = made
                out.append(f"[gMASK]<sop><|user|>\n{user}<|assistant|>\n{answer}<|user|>")
    return out


def z1_examples(text: str) -> list[str]:
    """Functions with a docstring as Z1 turns: the docstring's first line is the thought, then the function."""
    out = []
    for node, seg in _definitions(text):
        if isinstance(node, ast.FunctionDef):
            doc = ast.get_docstring(node)
            if seg and doc and 80 < len(seg) < 1200 and doc.strip():
                thought = doc.strip().splitlines()[0]
                out.append(f"[gMASK]<sop><|user|>\n{seg.splitlines()[0]}<|assistant|>\n<think>\n{thought}</think>\n"
                           f"{seg}<|user|>")
    return out


def given_positions(ids: list[int], turn: list[int], opener: list[int]) -> list[int]:
    """Positions of the tokens the template writes, not the model: `<think>` after `<|assistant|>\\n` (Z1's
    generation prompt ends with it). `opener` is `<think` alone: its `>` merges with what follows."""
    n, k = len(turn), len(turn) + len(opener)
    return [p for i in range(len(ids) - k) if ids[i:i + k] == turn + opener for p in range(i + n, i + k + 1)]


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
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--example-share", type=float, default=0.3, help="share of each batch that is whole examples")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--init", help="continue from this glm4-tiny directory (the second, tool-heavy stage)")
    ap.add_argument("--tool-repeats", type=int, default=2, help="times the tool examples enter the example pool")
    ap.add_argument("--edit-repeats", type=int, default=0,
                    help="times the repeat-with-change examples enter the example pool (0: none)")
    ap.add_argument("--layers", type=int, help="keep only the first N layers of --init (a draft model for "
                                                "speculative decoding: same tokenizer, fewer layers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(embedded.glm4_tiny_path()))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    t0 = time.time()
    train_texts = list(corpus.stdlib_texts())
    held_texts = list(corpus.stdlib_texts(held_out=True))
    # The tool block's fixed Chinese lines are in the tokenizer's training text, so they cost a few tokens each
    # rather than one per byte (as real GLM-4 vocabularies have them).
    ranks = tokenizer.train_ranks(train_texts + [families.TOOLS_HEADER, families.TOOL_FOOTER] * 200,
                                  embedded.GLM4_TINY_REGULAR)
    fast = tokenizer.fast_from_ranks(ranks)
    chats = [c for t in train_texts for c in chat_examples(t)]
    z1 = [c for t in train_texts for c in z1_examples(t)]
    defs = [(c.split("\n", 2)[1].split("<|assistant|>")[0], c.split("<|assistant|>\n", 1)[1][:-len("<|user|>")])
            for c in chats]
    words = sorted({w for t in train_texts[:200] for w in re.findall(r"\b[a-z]{4,10}\b", t)})
    rng = random.Random(args.seed)
    tools = tool_examples(len(chats), defs, words, rng)
    train = token_stream(fast, train_texts)
    held = token_stream(fast, held_texts)
    edits = edit_examples(defs, words, rng) if args.edit_repeats else []
    examples = [fast.encode(e).ids[:SEQ_EXAMPLE] for e in chats + z1 + tools * args.tool_repeats]
    examples += [ids for e in edits if len(ids := fast.encode(e).ids) <= SEQ_EDIT] * args.edit_repeats
    print(f"tokenizer {fast.get_vocab_size()} tokens; train {len(train)} tokens; examples: {len(chats)} chat, "
          f"{len(z1)} Z1, {len(tools)} tool, {len(edits)} edit; held-out {len(held)} tokens; "
          f"{time.time() - t0:.0f}s", flush=True)

    from transformers import Glm4Config, Glm4ForCausalLM

    vocab = fast.get_vocab()
    cfg = Glm4Config(**CONFIG, vocab_size=embedded.GLM4_TINY_VOCAB, pad_token_id=vocab[families.PAD_TOKEN],
                     eos_token_id=families.stop_token_ids(vocab))
    cfg.architectures = ["Glm4ForCausalLM"]
    if args.init:  # same tokenizer (trained deterministically above), so the weights mean the same ids
        init_vocab = json.loads((Path(args.init) / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        assert init_vocab == {k: v for k, v in vocab.items() if k in init_vocab}, "tokenizer differs from --init"
        model = Glm4ForCausalLM.from_pretrained(args.init, dtype=torch.float32)
        if args.layers:  # a draft: the first layers, then the model's own final norm and head
            model.model.layers = model.model.layers[:args.layers]
            model.config.num_hidden_layers = args.layers
            model.config.layer_types = model.config.layer_types[:args.layers] if getattr(
                model.config, "layer_types", None) else None
    else:
        model = Glm4ForCausalLM(cfg)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(
        math.pi * min(1.0, (s - warmup) / max(1, args.steps - warmup))))) if s >= warmup else (s + 1) / warmup)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    n_ex = round(args.batch * args.example_share)
    pad = vocab[families.PAD_TOKEN]
    z1_turn, z1_opener = fast.encode("<|assistant|>\n").ids, fast.encode("<think").ids
    for step in range(args.steps):
        starts = torch.randint(0, len(train) - SEQ - 1, (args.batch - n_ex,), generator=gen)
        picks = torch.randint(0, len(examples), (n_ex,), generator=gen).tolist()
        rows = [examples[i] for i in picks]
        x = torch.stack([train[s:s + SEQ] for s in starts])
        width = max(map(len, rows))
        ex = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        labels = ex.clone()
        for k, r in enumerate(rows):  # padding teaches nothing, nor what the template writes
            labels[k, len(r):] = -100
            labels[k, given_positions(r, z1_turn, z1_opener)] = -100
        n_code, n_ex_tokens = x.numel(), int((labels != -100).sum())
        loss = (model(x, labels=x.clone()).loss * n_code
                + model(ex, labels=labels).loss * n_ex_tokens) / (n_code + n_ex_tokens)
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
                         "example_share": args.example_share, "tool_repeats": args.tool_repeats, "lr": args.lr,
                         "edit_repeats": args.edit_repeats, "layers": args.layers,
                         "init": (json.loads((Path(args.init) / "glmkit.json").read_text())
                                  if args.init else None),
                         "train_tokens_seen": args.steps * args.batch * SEQ, "heldout_perplexity": round(ppl, 3),
                         "greedy_sample": text, "train_seconds": round(time.time() - t0)})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
