"""Generated pictures and questions about them: glm4v-tiny's training data and its held-out evaluation.

A picture holds one shape (circle, square, triangle) in one colour, in one part of the frame (left, right, top,
bottom), and one word written beside it; a question asks for one of the four, and the answer is one word. Drawn
with PIL at a random size and background, so preprocessing's resize is part of what is learnt.
"""

from __future__ import annotations

import random

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (230, 200, 20)}
PLACES = ("left", "right", "top", "bottom")
WORDS = ("cat", "sun", "box", "pen")
QUESTIONS = {"shape": "What shape is in the picture?", "colour": "What colour is the shape?",
             "place": "Where is the shape?", "word": "What word is written?"}
HELD_OUT_SEED = 20261202
CALIBRATION_SEED = 20261204  # the training side's distribution, never the held-out pictures


def picture(rng: random.Random):
    """(PIL image, its facts)."""
    from PIL import Image, ImageDraw, ImageFont

    facts = {"shape": rng.choice(SHAPES), "colour": rng.choice(list(COLOURS)), "place": rng.choice(PLACES),
             "word": rng.choice(WORDS)}
    size = rng.randint(96, 224)
    grey = rng.randint(225, 255)
    image = Image.new("RGB", (size, size), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    r = size * rng.uniform(0.13, 0.18)
    cx, cy = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75)}[facts["place"]]
    cx, cy = (cx + rng.uniform(-0.05, 0.05)) * size, (cy + rng.uniform(-0.05, 0.05)) * size
    colour = COLOURS[facts["colour"]]
    if facts["shape"] == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif facts["shape"] == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    # the word in the opposite part of the frame, large enough to read after the resize to the model's size
    wx, wy = {"left": (0.6, 0.45), "right": (0.1, 0.45), "top": (0.35, 0.7), "bottom": (0.35, 0.15)}[facts["place"]]
    font = ImageFont.load_default(size=max(12, size // 6))
    draw.text((wx * size, wy * size), facts["word"], fill=(0, 0, 0), font=font)
    return image, facts


def task(rng: random.Random, kind: str | None = None) -> dict:
    """One question about a new picture: messages (the picture as an `image` part), the expected answer."""
    image, facts = picture(rng)
    kind = kind or rng.choice(list(QUESTIONS))
    return {"kind": kind, "answer": facts[kind], "image": image,
            "messages": [{"role": "user", "content": [{"type": "image", "image": image},
                                                      {"type": "text", "text": QUESTIONS[kind]}]}]}


def held_out(n: int = 80) -> list[dict]:
    """Pictures never trained on (their own seed), the same number of each question."""
    rng = random.Random(HELD_OUT_SEED)
    return [task(rng, kind) for _ in range(n // len(QUESTIONS)) for kind in QUESTIONS]


def calibration(n: int) -> list:
    """n pictures for a quantizer's calibration, drawn as training pictures are (their own seed)."""
    rng = random.Random(CALIBRATION_SEED)
    return [picture(rng)[0] for _ in range(n)]


def accuracy(answer, tasks: list[dict]) -> dict:
    """Share of tasks whose answer (`answer(messages) -> text`, stripped) is the expected word, overall and per
    kind of question."""
    right: dict[str, list] = {k: [] for k in QUESTIONS}
    for t in tasks:
        right[t["kind"]].append(answer(t["messages"]).strip() == t["answer"])
    per = {k: sum(v) / len(v) for k, v in right.items() if v}
    return {"accuracy": sum(sum(v) for v in right.values()) / len(tasks), "by_kind": per, "tasks": len(tasks)}
