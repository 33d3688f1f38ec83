"""glm-bench chat: what a conversation costs — time to first token turn by turn, beside each engine's own
multi-turn path, and inter-token latency by position over one long answer.

The engine's own path runs on a second copy of the model loaded beside glmkit's, turn by turn in alternation, so
a slow spell of the machine hits both, and is sent the same conversation (glmkit's answers in its history: a
random-weight model's answers re-render to very different token counts, which would compare unlike work):
llama-cpp-python's `create_chat_completion` (it reuses the common prefix of
its previous prompt) and openvino-genai's `generate(ChatHistory)` (LLMPipeline keeps the previous KV).
"""

from __future__ import annotations

import statistics
from datetime import datetime, timezone

from glmkit.glm4.errors import GlmkitError
from glmkit.runtimes import GenerationConfig, load

SCHEMA = "glm-bench-chat/1"
BANDS = 4  # inter-token latency reported in this many position bands


def user_messages(turns: int, chars: int) -> list[str]:
    """Distinct user messages of about `chars` characters, cut from glm4-tiny's held-out text."""
    from glmkit.sources.embedded import held_out_text

    text = held_out_text()
    step = max(chars, (len(text) - chars) // max(1, turns))
    return [text[i * step:i * step + chars] for i in range(turns)]


def chat_turns(model: str, turns: int = 6, user_chars: int = 700, answer_tokens: int = 32,
               system: str = "You write Python.", **options) -> dict:
    """TTFT per turn of glmkit's ChatSession and of the engine's own multi-turn path, alternating turn by turn."""
    rt = load(model, **options)
    try:
        if rt.kind.own_chat is None:
            raise GlmkitError(f"glm-bench chat compares with an engine's own chat path: give an OpenVINO IR or a "
                              f"GGUF, not {rt.kind.label}")
        engine_turn, engine_close = rt.kind.own_chat(rt, model)
        session = rt.chat(system=system, config=GenerationConfig(max_new_tokens=answer_tokens))
        history = [{"role": "system", "content": system}]
        rows = []
        try:
            for i, user in enumerate(user_messages(turns, user_chars)):
                r = session.send(user)
                history.append({"role": "user", "content": user})
                ttft, _ = engine_turn(history, answer_tokens)
                # both sides carry the same conversation: glmkit's answer goes into the engine's history too
                history.append({"role": "assistant", "content": r.text})
                rows.append({"turn": i + 1, "prompt_tokens": r.prompt_tokens, "cached_tokens": r.cached_tokens,
                             "glmkit_ttft_ms": r.ttft_ms, "engine_ttft_ms": ttft, "ratio": r.ttft_ms / ttft})
        finally:
            engine_close()
        return {"model": str(model), "backend": rt.backend, "turns": rows,
                "engine_path": rt.kind.own_chat_path}
    finally:
        rt.close()


def long_answer(model: str, tokens: int = 2000, prompt: str = "def read_config(path):", **options) -> dict:
    """Inter-token latency against position over one long greedy answer: glmkit, then the raw engine."""
    rt = load(model, **options)
    try:
        ids = rt.prompt_ids(prompt)
        tokens = rt.budget(len(ids), tokens)
        r = rt.generate(ids, GenerationConfig(max_new_tokens=tokens, ignore_eos=True))
        rt.reset_cache()
        # the raw engine's per-token stamps on the same loaded model (no glmkit in between)
        raw = rt.kind.raw_stamps(rt, ids, tokens)[1:] if rt.kind.raw_stamps else []
        raw_itl = [(b - a) * 1000 for a, b in zip(raw, raw[1:])]
        width = max(1, tokens // BANDS)
        bands = []
        for a in range(0, tokens - 1, width):
            ours, theirs = r.itl_ms[a:a + width], raw_itl[a:a + width]
            if not ours:
                break
            row = {"from": a + 1, "to": a + len(ours), "glmkit_ms": statistics.median(ours)}
            if theirs:
                row.update(raw_ms=statistics.median(theirs), ratio=statistics.median(ours) / statistics.median(theirs))
            bands.append(row)
        return {"model": str(model), "backend": rt.backend, "tokens": tokens, "bands": bands}
    finally:
        rt.close()


def run(models: list[str], turns: int = 6, user_chars: int = 700, answer_tokens: int = 32,
        long_tokens: int = 0, long_models: list[str] | None = None, **options) -> dict:
    from .environment import environment

    data = {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(options.get("threads")),
            "settings": {"turns": turns, "user_chars": user_chars, "answer_tokens": answer_tokens,
                         "long_tokens": long_tokens},
            "chats": [chat_turns(m, turns, user_chars, answer_tokens, **options) for m in models] if turns else [],
            "long": [long_answer(m, long_tokens, **options) for m in (long_models or models)] if long_tokens else []}
    return data


def to_markdown(data: dict) -> str:
    lines = []
    for c in data["chats"]:
        lines += [f"### {c['model']} ({c['backend']}) — time to first token per turn, ms", "",
                  "| turn | prompt tokens | reused | glmkit | " + c["engine_path"] + " | glmkit / engine |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['turn']} | {r['prompt_tokens']} | {r['cached_tokens']} | {r['glmkit_ttft_ms']:.0f} | "
                  f"{r['engine_ttft_ms']:.0f} | {r['ratio']:.2f}× |" for r in c["turns"]]
        lines.append("")
    for lg in data["long"]:
        lines += [f"### {lg['model']} ({lg['backend']}) — inter-token latency by position over {lg['tokens']} "
                  "tokens, median ms", "", "| tokens | glmkit | raw engine | glmkit / raw |", "|---|---|---|---|"]
        lines += [f"| {b['from']}–{b['to']} | {b['glmkit_ms']:.3f} | {b.get('raw_ms', float('nan')):.3f} | "
                  f"{b.get('ratio', float('nan')):.2f}× |" for b in lg["bands"]]
        lines.append("")
    return "\n".join(lines)


def plot(data: dict, path) -> object:
    """TTFT per turn, glmkit (solid) against the engine's own path (dashed), one colour per model."""
    from .plots import _pyplot, _save, available

    if not data["chats"] or not available():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in data["chats"]:
        x = [r["turn"] for r in c["turns"]]
        line, = ax.plot(x, [r["glmkit_ttft_ms"] for r in c["turns"]], marker="o", label=f"glmkit · {c['model']}")
        ax.plot(x, [r["engine_ttft_ms"] for r in c["turns"]], marker="x", linestyle="--", color=line.get_color(),
                label=c["engine_path"])
    ax.set_xlabel("turn")
    ax.set_ylabel("time to first token, ms")
    ax.set_title("multi-turn chat: TTFT per turn", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)
