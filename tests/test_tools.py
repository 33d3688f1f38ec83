"""GLM-4 tool calls: OpenAI messages rendered through the templates real checkpoints ship, and the model's turns
parsed back — several calls, malformed JSON, unknown names, text that merely starts with a tool's name — whole
and streamed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glmkit.glm4 import messages as glm_messages
from glmkit.glm4 import template
from glmkit.glm4.parser import OutputParser, OutputSpec, Text, parse_text

TEMPLATES = Path(__file__).parent / "data" / "templates"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
NAMES = frozenset({"get_weather", "add"})
TURN = OutputSpec(marker=True, tools=NAMES)  # a turn after <|assistant|> with these tools declared
OPENAI_LOOP = [
    {"role": "user", "content": "Weather in Paris, and 2+3?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "21 °C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "5"},
]


def _render(name: str, messages: list[dict], tools: list[dict]) -> str:
    source = (TEMPLATES / name).read_text(encoding="utf-8")
    glm, tools_arg = glm_messages.attach_tools(glm_messages.to_glm_messages(messages), tools, source)
    return template.render(source, glm, tools_arg)


@pytest.mark.parametrize("name", ["GLM-4-9B-0414.chat_template.jinja", "glm-4-9b-chat.chat_template.jinja"])
def test_openai_tool_history_renders_as_glm4_turns(name):
    """Both real templates: the tool block, each call as `<|assistant|>name\\n{args}`, each result as an
    observation, and the generation prompt `<|assistant|>` with no newline (docs/glm4-format.md, "Tools")."""
    text = _render(name, OPENAI_LOOP, [WEATHER, ADD])
    assert "# 可用工具" in text and "## get_weather" in text and "## add" in text
    assert '"name": "get_weather"' in text  # the schema, as tojson(indent=4) wrote it
    calls = '<|assistant|>get_weather \n{"city": "Paris"}<|assistant|>add \n{"a": 2, "b": 3}' if "0414" in name \
        else '<|assistant|>get_weather\n{"city": "Paris"}<|assistant|>add\n{"a": 2, "b": 3}'
    assert calls in text
    assert text.endswith("<|observation|>\n21 °C<|observation|>\n5<|assistant|>")
    assert text.index("# 可用工具") < text.index("<|user|>\nWeather in Paris")


def test_where_each_template_reads_tools_from():
    read = {p.name: glm_messages.template_reads_tools(p.read_text(encoding="utf-8")) for p in TEMPLATES.glob("*.jinja")}
    assert read == {"GLM-4-9B-0414.chat_template.jinja": "argument", "glm-4-9b-chat.chat_template.jinja": "message"}


def _parse(text: str, names=NAMES):
    content, _, calls = parse_text(text, OutputSpec(marker=True, tools=frozenset(names)))
    return content, calls


def test_several_calls_in_one_turn():
    content, calls = _parse('get_weather\n{"city": "Paris"}<|assistant|>add\n{"a": 2, "b": 3}')
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("add", {"a": 2, "b": 3})]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


@pytest.mark.parametrize("text,content", [
    ('get_weather\n{"city": "Par', 'get_weather\n{"city": "Par'),                    # malformed JSON
    ('get_forecast\n{"city": "Paris"}', 'get_forecast\n{"city": "Paris"}'),            # a tool nobody declared
    ('get_weather\n["Paris"]', 'get_weather\n["Paris"]'),                              # JSON, but not an object
    ("add\nition is what you need here.", "add\nition is what you need here."),       # starts with a tool's name
    ("addition\n{}", "addition\n{}"),
    ("\nIt is sunny.", "It is sunny."),                                                 # a plain answer
    ('get_weather\n{"city": "Paris"}<|assistant|>\nDone.', 'get_weather\n{"city": "Paris"}<|assistant|>\nDone.'),
])
def test_what_is_not_a_valid_call_comes_back_as_text(text, content):
    assert _parse(text) == (content, [])


def _streamed(pieces: list[str], names=NAMES):
    parser = OutputParser(OutputSpec(marker=True, tools=frozenset(names)))
    events = [e for p in pieces for e in parser.feed(p)] + parser.close()
    return "".join(e.text for e in events if isinstance(e, Text)), parser.calls


@pytest.mark.parametrize("text", ["\nIt is sunny in Paris.", 'get_weather\n{"city": "Paris"}',
                                  'get_weather\n{"city": "Par', "add\nition is fun", "addendum: none",
                                  'add\n{"a": 1}<|assistant|>get_weather\n{"city": "Oslo"}', "x"])
def test_streaming_decides_on_the_first_line_and_agrees_with_the_whole(text):
    for size in (1, 3, len(text)):
        got, calls = _streamed([text[i:i + size] for i in range(0, len(text), size)])
        want_content, want_calls = _parse(text)
        assert got == want_content
        assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in want_calls]


def test_a_plain_answer_streams_before_the_turn_ends():
    parser = OutputParser(TURN)
    assert parser.feed("\nThe") == [Text("The")] and parser.feed(" answer") == [Text(" answer")]
    parser = OutputParser(TURN)
    assert parser.feed("get_") == [] and parser.feed("weather\n{") == []  # could be a call: held


def test_openai_messages_become_glm_turns():
    glm = glm_messages.to_glm_messages([{"role": "developer", "content": "Be brief."},
                                     {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                                     {"role": "assistant", "content": "Let me check.", "tool_calls": [
                                         {"function": {"name": "add", "arguments": "{}"}}]},
                                     {"role": "tool", "content": "0"}])
    assert glm == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Let me check."},
                   {"role": "assistant", "metadata": "add", "content": "{}"},
                   {"role": "observation", "content": "0"}]
