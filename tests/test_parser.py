"""GLM-4's one output parser: both templates' tool-call formats, Z1 thoughts, stop strings split across pieces, and
a stream cut into 1-, 3- or whole-size pieces giving exactly the events of the whole text."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from glmkit.glm4 import messages, template
from glmkit.glm4.parser import End, OutputParser, OutputSpec, Reasoning, Text, parse_text
from glmkit.glm4.toolcalls import ToolCall

TEMPLATES = Path(__file__).parent / "data" / "templates"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
NAMES = frozenset({"get_weather", "add"})
CALLS = [("get_weather", {"city": "Paris"}), ("add", {"a": 2, "b": 3})]

TURN = OutputSpec(marker=True, tools=NAMES)
Z1 = OutputSpec(thinks=True)
Z1_TOOLS = OutputSpec(thinks=True, tools=NAMES)
# (text, spec): answers, calls, Z1 thoughts, stop strings, and text that only looks like a call
CASES = [
    ("\nIt is sunny in Paris.", TURN),
    ('get_weather\n{"city": "Paris"}', TURN),
    ('add\n{"a": 1}<|assistant|>get_weather\n{"city": "Oslo"}', TURN),
    ('get_weather\n{"city": "Par', TURN),
    ("add\nition is fun", TURN),
    ("addendum: none", TURN),
    ('get_weather\n{"city": "Paris"}<|assistant|>\nDone.', TURN),
    ("\nHello\n\nworld", OutputSpec(marker=True)),
    ("no marker here", OutputSpec(marker=True)),
    ("raw text, kept as is\n", OutputSpec()),
    ("\nLet me think. </think>\n\nThe answer. \n", Z1),
    ("First, recall.</think>\n\nThe answer is 42.", Z1),
    ("A thought that never ends", Z1),
    ('I should call it.</think>\nget_weather\n{"city": "Rome"}', Z1_TOOLS),
    ("Thinking.</think>\nIt is warm.", Z1_TOOLS),
    ("abc ENx\n\ny END tail", OutputSpec(stop=("END", "\n\n\n"))),
    ("\nline one\nSTOP line two", OutputSpec(marker=True, stop=("STOP",))),
    ("\nline one\nline two", OutputSpec(marker=True, stop=("\n",))),
    ('get_weather\n{"city": "Paris"}', OutputSpec(marker=True, tools=NAMES, stop=("\n\n",))),
    ("A thought STOP more</think>answer", OutputSpec(thinks=True, stop=("STOP",))),
    ('get_weather\n{"city": "Paris"}\n\nEND garbage', OutputSpec(marker=True, tools=NAMES, stop=("END",))),
    ("think</think>ans<wer>STO", OutputSpec(thinks=True, stop=("STOP",))),
    ('get_weather\n{"city": "a<|assistant|>b"}<|assistant|>add\n{"a": 1}', TURN),  # the separator inside a string
]


def _events(pieces: list[str], spec: OutputSpec) -> list:
    parser = OutputParser(spec)
    events = [e for p in pieces for e in parser.feed(p)] + parser.close()
    return events


def _summary(events: list) -> tuple:
    """What a consumer sees: joined reasoning, joined answer, the calls (ids aside) and how it ended."""
    return ("".join(e.text for e in events if isinstance(e, Reasoning)),
            "".join(e.text for e in events if isinstance(e, Text)),
            [(e.name, json.loads(e.arguments)) for e in events if isinstance(e, ToolCall)],
            [e.reason for e in events if isinstance(e, End)])


def test_a_newline_stop_string_ends_the_answer_not_the_turns_own_newline():
    """GLM-4 starts an answer with "\n" (its marker): a stop string "\n" (lm-evaluation-harness's usual one)
    ends the answer's first line, not the turn before it starts (it once left every answer empty)."""
    for size in (1, 2, 40):
        text = "\nIt is sunny.\nMore."
        events = _events([text[i:i + size] for i in range(0, len(text), size)],
                         OutputSpec(marker=True, stop=("\n",)))
        assert _summary(events)[1:] == ("It is sunny.", [], ["stop_string"])


@pytest.mark.parametrize("text,spec", CASES)
def test_streaming_in_any_piece_size_equals_the_whole_text(text, spec):
    whole = _summary(_events([text], spec))
    for size in (1, 3, len(text)):
        assert _summary(_events([text[i:i + size] for i in range(0, len(text), size)], spec)) == whole, size
    rng = random.Random(text)
    for _ in range(20):  # and cut at random places
        cuts = sorted(rng.sample(range(1, len(text)), min(4, len(text) - 1)))
        pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        assert _summary(_events(pieces, spec)) == whole, pieces


def test_the_whole_text_parse():
    assert parse_text("\nIt is sunny.", TURN) == ("It is sunny.", None, [])
    content, reasoning, calls = parse_text('I should call it.</think>\nget_weather\n{"city": "Rome"}', Z1_TOOLS)
    assert (content, reasoning) == ("", "I should call it.")
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Rome"})]
    assert parse_text("First, recall.</think>\n\nThe answer is 42.", Z1)[:2] == ("The answer is 42.", "First, recall.")
    assert parse_text("A thought that never ends", Z1)[:2] == ("", "A thought that never ends")


@pytest.mark.parametrize("name", ["GLM-4-9B-0414.chat_template.jinja", "glm-4-9b-chat.chat_template.jinja"])
def test_calls_written_as_each_real_template_writes_them_parse_back(name):
    """The model imitates its template's own history: a turn of two calls as each template renders it (0414 and
    glm-4-9b-chat differ in whitespace) parses back to the same calls, whole and streamed."""
    source = (TEMPLATES / name).read_text(encoding="utf-8")
    history = [{"role": "user", "content": "Weather in Paris, and 2+3?"}] + [
        {"role": "assistant", "metadata": n, "content": json.dumps(a)} for n, a in CALLS]
    msgs, tools = messages.attach_tools(history, [WEATHER, ADD], source)
    text = template.render(source, msgs, tools, add_generation_prompt=False)
    turn = text[text.index("<|assistant|>") + len("<|assistant|>"):]  # what the model wrote after <|assistant|>
    assert re.match(r"get_weather ?\n", turn), turn  # the format under test really is each template's
    for size in (1, 3, len(turn)):
        events = _events([turn[i:i + size] for i in range(0, len(turn), size)], TURN)
        assert _summary(events) == ("", "", CALLS, ["end"])


def test_stop_strings_split_across_pieces_never_leak():
    parser = OutputParser(OutputSpec(marker=True, stop=("<END>",)))
    out = [e.text for p in ["\nkeep <E", "N", "D> lost", " more"] for e in parser.feed(p) if isinstance(e, Text)]
    assert "".join(out) == "keep " and parser.stopped
    assert parser.close() == [End("stop_string")]
    assert "<" not in "".join(out)  # the tail "<E" waited until "ND>" showed it was the stop string


def test_a_forced_prefix_is_part_of_the_turn():
    """glm-serve forces a tool's name (tool_choice) or an answer's "\\n" (tool_choice none) into the prompt: the
    parser reads the prefix first, as if generated."""
    forced = OutputSpec(marker=True, tools=NAMES, prefix="add\n")
    assert [(c.name, c.arguments) for c in parse_text('{"a": 1, "b": 2}', forced)[2]] == [("add", '{"a": 1, "b": 2}')]
    assert parse_text("free words", forced)[:1] == ("add\nfree words",)  # not a call: the whole turn is text
    answer = OutputSpec(marker=True, prefix="\n")
    assert parse_text('{"x": 1}', answer)[0] == '{"x": 1}'


def test_calls_so_far_for_consumers_that_stream_calls():
    parser = OutputParser(TURN)
    parser.feed('add\n{"a": 1')
    assert parser.in_call and parser.calls_so_far() == []
    parser.feed('}<|assistant|>get_weather\n{"city": "Oslo"}')
    assert [c.name for c in parser.calls_so_far()] == ["add", "get_weather"]


def test_the_call_separator_inside_an_argument_string_is_text():
    """A grammar-valid argument may hold `<|assistant|>`: calls split only where the text before is a whole call."""
    content, _, calls = parse_text('get_weather\n{"city": "a<|assistant|>b"}<|assistant|>add\n{"a": 1}', TURN)
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "a<|assistant|>b"}), ("add", {"a": 1})]


@pytest.mark.parametrize("text,content", [
    ('get_weather\n{"city": "Pa', ""),     # a call cut short: dropped, not passed off as an answer
    ("get_wea", ""),                        # a first line that could still become a tool's name
    ("\nIt is su", "It is su"),             # an answer cut short is still the answer
])
def test_a_turn_cut_by_the_budget_never_leaks_a_partial_call(text, content):
    parser = OutputParser(TURN)
    events = parser.feed(text) + parser.close(truncated=True)
    assert parser.content == content and not parser.calls and events[-1] == End("end")
