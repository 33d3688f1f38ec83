"""The runtime's own chat-template renderer and tokenizer against transformers itself: same text, same ids.

The templates are the ones real GLM-4 checkpoints ship (../shared/reference, copied into tests/data) and glmkit's
own; the conversations use every branch they have: system, tools (as the argument and as a message field),
assistant metadata turns, observations, non-ASCII and HTML characters that a wrong `tojson` would escape.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from glmkit.convert import GlmkitError
from glmkit.glm4 import families
from glmkit.glm4 import template as templates
from glmkit.runtimes.tokenizer import from_hf
from glmkit.sources import embedded
from glmkit.sources.corpus import TOKENIZER_PROBES

REFERENCE = Path(__file__).parent / "data" / "templates"
TEMPLATES = {p.name.split(".")[0]: p.read_text(encoding="utf-8") for p in sorted(REFERENCE.glob("*.jinja"))}
TEMPLATES.update({f"glmkit-{k}": v.template for k, v in families.CHAT_FORMATS.items()})

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Погода <сейчас> в городе — «точно» & 'быстро'",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "城市名"}},
                   "required": ["city"]}}}
ADD = {"type": "function", "function": {"name": "add", "description": "a + b",
                                        "parameters": {"type": "object", "properties": {
                                            "a": {"type": "number"}, "b": {"type": "number"}}}}}
CONVERSATIONS = {
    "plain": [{"role": "user", "content": "def fib(n):"}],
    "system": [{"role": "system", "content": "Ты — помощник. 你好 <b>bold</b> & \"quotes\""},
               {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
               {"role": "user", "content": "  spaces\tand\nlines  "}],
    "tool-loop": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "metadata": "get_weather", "content": '{"city": "Paris"}'},
                  {"role": "observation", "content": '{"temp": 21, "sky": "ясно"}'},
                  {"role": "assistant", "content": "21 °C, clear."}, {"role": "user", "content": "And 2+3?"}],
    "z1-history": [{"role": "user", "content": "2+2?"},
                   {"role": "assistant", "content": "<think>easy</think>\n4"}, {"role": "user", "content": "3+3?"}],
}


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded.glm4_tiny_path()), trust_remote_code=False)


def _cases():
    for t in TEMPLATES:
        for c in CONVERSATIONS:
            for tools in (None, [WEATHER, ADD]):
                yield pytest.param(t, c, tools, id=f"{t}-{c}-{'tools' if tools else 'none'}")


@pytest.mark.parametrize("name,conversation,tools", list(_cases()))
def test_same_text_as_transformers(hf_tokenizer, name, conversation, tools):
    messages = [dict(m) for m in CONVERSATIONS[conversation]]
    if tools and name == "glm-4-9b-chat":
        messages[0] = {**messages[0], "tools": tools}  # this template reads tools from a message
    for gen in (True, False):
        want = hf_tokenizer.apply_chat_template(messages, tools=tools, chat_template=TEMPLATES[name],
                                                add_generation_prompt=gen, tokenize=False)
        got = templates.render(TEMPLATES[name], messages, tools, add_generation_prompt=gen,
                               **from_hf(embedded.glm4_tiny_path()).template_context)
        assert got == want


def test_tojson_keeps_text_as_the_checkpoint_wrote_it():
    """GLM-4-0414 renders tool schemas with tojson(indent=4, ensure_ascii=False): Cyrillic, CJK, <, & and ' stay
    as they are (jinja's own tojson would write \\u003c and \\u0027 and change the prompt's tokens)."""
    text = templates.render(TEMPLATES["GLM-4-9B-0414"], CONVERSATIONS["plain"], [WEATHER])
    assert "Погода <сейчас> в городе — «точно» & 'быстро'" in text and '    "name": "get_weather"' in text


def test_same_ids_as_transformers(hf_tokenizer):
    tok = from_hf(embedded.glm4_tiny_path())
    texts = list(TOKENIZER_PROBES) + [templates.render(TEMPLATES["GLM-4-9B-0414"], CONVERSATIONS["tool-loop"],
                                                       [WEATHER])]
    for text in texts:
        assert tok.encode(text) == hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = tok.encode(text)
        assert tok.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=False)
    assert tok.special_ids == {t: hf_tokenizer.convert_tokens_to_ids(t) for t in tok.special_ids}
    assert set(tok.special_ids) == set(families.SPECIAL_TOKENS)


def test_a_template_that_raises_is_one_clear_error():
    source = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be the user') }}{% endif %}"
    with pytest.raises(GlmkitError, match="first message must be the user"):
        templates.render(source, [{"role": "system", "content": "x"}])
    with pytest.raises(GlmkitError, match="does not parse"):
        templates.render("{% for m in messages %}", [])


def test_the_sandbox_holds():
    """A checkpoint's template is code from the internet: it cannot reach Python's internals or change its input."""
    with pytest.raises(GlmkitError):
        templates.render("{{ messages.__class__.__base__.__subclasses__() }}", [])
    with pytest.raises(GlmkitError):
        templates.render("{{ messages.append(1) }}", [])
