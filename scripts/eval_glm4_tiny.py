"""The figures the README gives for glm4-tiny, measured on the weights in place (or --model DIR):

    python scripts/eval_glm4_tiny.py [--model sources/data/glm4-tiny] [--requests 60] [--seed 123]

- tool use on fresh requests (a seed the training did not use; cities and words drawn as the training draws them,
  invented city names included): how often its greedy call is exactly the request's, and how often, given the
  tool's result, its answer is exactly the one the training format gives;
- how often a GLM-4 chat answer opens a thought (it must not: Z1's template writes `<think>`, not the model),
  over held-out def/class lines;
- repeat-with-change on held-out functions (glmkit.benchmarks.grounded: rename, quotes, repeat, extract): how
  often the answer is exactly the edit, and how much of it is copied from the request (the share of its 8-token
  windows found in the request: what prompt lookup can propose).
Greedy, on the transformers reference (glmkit's runtime), so every engine should reproduce it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import train_glm4_tiny as train  # noqa: E402  (the training's own tools, questions and answer format)

from glmkit.benchmarks.grounded import held_out_tasks  # noqa: E402
from glmkit.runtimes import GenerationConfig, load  # noqa: E402
from glmkit.sources import corpus, embedded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(embedded.glm4_tiny_path()))
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--lines", type=int, default=200, help="held-out def/class lines for the thought check")
    ap.add_argument("--edits", type=int, default=15, help="held-out edits of each kind")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    words = sorted({w for t in list(corpus.stdlib_texts())[:200] for w in re.findall(r"\b[a-z]{4,10}\b", t)})
    calls = answers = 0
    with load(args.model, backend="transformers") as rt:
        for _ in range(args.requests):
            name = rng.choice(sorted(train.TOOLS))
            offered = sorted({name, rng.choice(sorted(train.TOOLS))})
            tools = [{"type": "function", "function": {"name": k, **train.TOOLS[k]}} for k in offered]
            call = train._arguments(name, rng, words)
            user = {"role": "user", "content": rng.choice(train.ASK[name]).format(**call)}
            got = rt.generate([user], GenerationConfig(max_new_tokens=64), tools=tools).tool_calls
            calls += [(c.name, json.loads(c.arguments)) for c in got] == [(name, call)]
            result, answer = train._observation(name, call, rng, words)
            turns = [user, {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": name, "arguments": json.dumps(call)}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": result}]
            answers += rt.generate(turns, GenerationConfig(max_new_tokens=64), tools=tools).text == answer
        lines = [ln for t in corpus.stdlib_texts(held_out=True) for ln in t.splitlines()
                 if ln.startswith(("def ", "class ")) and ln.endswith(":")][:args.lines]
        thoughts = sum("<think>" in rt.generate([{"role": "user", "content": ln}],
                                                GenerationConfig(max_new_tokens=8)).text for ln in lines)
        edits = {}
        for task in held_out_tasks(args.edits):
            if task["expected"] is None:
                continue
            budget = len(rt.tokenizer.encode(task["expected"])) + 8  # room for the edit and its stop
            r = rt.generate(task["messages"], GenerationConfig(max_new_tokens=budget))
            exact, copied = edits.get(task["kind"], (0, []))
            edits[task["kind"]] = (exact + (r.text.strip() == task["expected"].strip()),
                                   copied + [_copied(rt, task["messages"][0]["content"], r.token_ids)])
    print(f"{args.model}: exact calls {calls}/{args.requests}, exact answers from the result "
          f"{answers}/{args.requests}, answers opening a thought {thoughts}/{len(lines)}")
    for kind, (exact, copied) in edits.items():
        print(f"  {kind}: exact {exact}/{len(copied)}, copied from the request {sum(copied) / len(copied):.0%}")


def _copied(rt, request: str, answer: list[int], n: int = 8) -> float:
    """Share of the answer's n-token windows that occur in the request."""
    req = rt.tokenizer.encode(request)
    seen = {tuple(req[i:i + n]) for i in range(len(req) - n + 1)}
    windows = [tuple(answer[i:i + n]) for i in range(len(answer) - n + 1)]
    return sum(w in seen for w in windows) / len(windows) if windows else 0.0


if __name__ == "__main__":
    main()
