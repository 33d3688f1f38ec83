"""Artifacts and expectations for the lean-install tests (tests/test_lean.py), made by the full install.

    .venv/bin/python scripts/lean_fixture.py DIR

Converts glm4-tiny to an OpenVINO IR and a GGUF in DIR, and writes DIR/expected.json with what the full install
computes: transformers' rendering and ids for chat templates real checkpoints ship, and the greedy tokens and
prompt ids of each artifact through glmkit's runtimes. The lean venv (no torch, no transformers) must reproduce
all of it. Give DIR a path with spaces and non-ASCII characters: that is part of what is tested.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CONVERSATIONS = [
    [{"role": "user", "content": "def fib(n):"}],
    [{"role": "system", "content": "Ты — помощник <b>&</b>"}, {"role": "user", "content": "class Stack:"},
     {"role": "assistant", "content": "    def push(self, x):"}, {"role": "user", "content": "def pop(self):"}],
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Погода «сейчас» <город>",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
PROMPTS = ["def fib(n):", "import os\n"]
NEW_TOKENS = 24


def main(out: Path) -> None:
    from transformers import AutoTokenizer

    from glmkit.convert import to_gguf, to_openvino
    from glmkit.runtimes import GenerationConfig, load
    from glmkit.sources import embedded

    out.mkdir(parents=True, exist_ok=True)
    artifacts = {"openvino": to_openvino("glm4-tiny", out / "tiny int8 ИР", weight_format="int8", verify=False,
                                         quiet=True, force=True),
                 "llamacpp": to_gguf("glm4-tiny", out / "tiny q8_0 модель.gguf", outtype="q8_0", verify=False,
                                     quiet=True, force=True)}
    hf = AutoTokenizer.from_pretrained(str(embedded.glm4_tiny_path()), trust_remote_code=False)
    templates = []
    for path in sorted((HERE / "tests" / "data" / "templates").glob("*.jinja")):
        source = path.read_text(encoding="utf-8")
        for messages in CONVERSATIONS:
            for tools in (None, TOOLS):
                text = hf.apply_chat_template(messages, tools=tools, chat_template=source, tokenize=False,
                                              add_generation_prompt=True)
                templates.append({"template": path.name, "messages": messages, "tools": tools, "text": text,
                                  "ids": hf(text, add_special_tokens=False)["input_ids"]})
    runs = []
    greedy = GenerationConfig(max_new_tokens=NEW_TOKENS, ignore_eos=True)
    for backend, path in artifacts.items():
        with load(str(path)) as rt:
            for prompt in PROMPTS + CONVERSATIONS:
                r = rt.generate(prompt, greedy)
                answer = rt.generate(prompt, GenerationConfig(max_new_tokens=NEW_TOKENS))  # stops as a server does
                runs.append({"backend": backend, "artifact": Path(path).name, "prompt": prompt,
                             "prompt_ids": rt.prompt_ids(prompt), "token_ids": r.token_ids, "text": r.text,
                             "answer": answer.text, "answer_tokens": len(answer.token_ids)})
    runs += _glm4v(out)
    (out / "expected.json").write_text(json.dumps({"templates": templates, "runs": runs}, ensure_ascii=False,
                                                  indent=1), encoding="utf-8")
    print(out / "expected.json")


def glm4v_messages(image: Path, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": str(image)}, {"type": "text", "text": question}]}]


def _glm4v(out: Path) -> list[dict]:
    """glm4v-tiny's int8 IR and a picture file: its greedy answers (f32 inference) to each kind of question."""
    import random

    from glmkit.convert import to_openvino
    from glmkit.runtimes import GenerationConfig, load
    from glmkit.sources import pictures

    ir = to_openvino("glm4v-tiny", out / "glm4v-tiny int8 ИР", weight_format="int8", verify=False, quiet=True,
                     force=True)
    image, _ = pictures.picture(random.Random(3))
    image.save(out / "картинка.png")
    runs = []
    with load(str(ir), dtype="float32") as rt:
        for question in pictures.QUESTIONS.values():
            r = rt.generate(glm4v_messages(out / "картинка.png", question),
                            GenerationConfig(max_new_tokens=NEW_TOKENS, ignore_eos=True))
            runs.append({"backend": "glm4v", "artifact": Path(ir).name, "image": "картинка.png", "question": question,
                         "token_ids": r.token_ids, "text": r.text})
    return runs


if __name__ == "__main__":
    main(Path(sys.argv[1]))
