"""Input-grounded requests: answers that repeat their input with a change (rename, reformat, quote, extract), as
code edits and refactors do. Speculation's prompt lookup wins exactly here, so glm-bench measures it on them;
glm4-tiny's training script teaches the same requests, in the same words, on other functions.
"""

from __future__ import annotations

import keyword
import random
import re

EDITS = ("rename", "quotes", "repeat", "extract")
_NOT_NAMES = frozenset(keyword.kwlist) | {"self", "cls", "None", "True", "False"}


def edit_request(kind: str, code: str, rng: random.Random, words: list[str]) -> tuple[str, str] | None:
    """(user request, the answer) of one repeat-with-change edit of `code`, or None where it does not apply."""
    if kind == "rename":
        names = [n for n in re.findall(r"\b[A-Za-z_][A-Za-z0-9_]{2,}\b", code) if n not in _NOT_NAMES]
        repeated = sorted({n for n in names if names.count(n) >= 2})
        if not repeated:
            return None
        old = rng.choice(repeated)
        new = rng.choice(words) if rng.random() < 0.7 else f"{rng.choice(words)}_{rng.choice(words)}"
        if re.search(rf"\b{new}\b", code):
            return None
        return f"Rename {old} to {new}:\n{code}", re.sub(rf"\b{old}\b", new, code)
    if kind == "quotes":
        if "'" not in code or '"' in code:
            return None
        return f"Use double quotes:\n{code}", code.replace("'", '"')
    if kind == "repeat":
        return f"Repeat this exactly:\n{code}", code
    doc = re.search(r'"""(.*?)"""', code, re.S)
    if not doc or not doc.group(1).strip():
        return None
    return f"Extract the docstring:\n{code}", doc.group(1).strip()


def functions(texts, max_chars: int = 700) -> list[str]:
    """Top-level functions of Python sources, short enough that a request and its answer fit a small context."""
    import ast

    out = []
    for text in texts:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                seg = ast.get_source_segment(text, node)
                if seg and 80 < len(seg) <= max_chars:
                    out.append(seg)
    return out


def held_out_tasks(count: int, seed: int = 0) -> list[dict]:
    """`count` edits of each kind on functions glm4-tiny never saw (the stdlib files held out of its training),
    and as many free-text requests (a def line to write out): {kind, messages, expected}."""
    from glmkit.sources import corpus

    texts = list(corpus.stdlib_texts(held_out=True))
    words = sorted({w for t in texts[:50] for w in re.findall(r"\b[a-z]{4,10}\b", t)})
    rng = random.Random(seed)
    pool = functions(texts)
    rng.shuffle(pool)
    tasks: list[dict] = []
    for kind in EDITS:
        for code in pool:
            if sum(t["kind"] == kind for t in tasks) == count:
                break
            if (made := edit_request(kind, code, rng, words)) is not None:
                tasks.append({"kind": kind, "messages": [{"role": "user", "content": made[0]}], "expected": made[1]})
    for code in pool[:count]:
        tasks.append({"kind": "free", "messages": [{"role": "user", "content": code.splitlines()[0]}],
                      "expected": None})
    return tasks
