"""Constrained answers through each engine's own constrained decoding: JSON that matches a schema, or one GLM-4
tool call (`name\\n{arguments}`) whose name is a declared tool and whose arguments match its parameters.

Both engines get one GBNF grammar, written by llama-cpp-python's JSON-schema converter: llama.cpp's grammar
sampler and openvino-genai's StructuredOutputConfig (xgrammar underneath) read it, so both allow the same answers.
The PyTorch reference has no constrained decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from glmkit.glm4.toolcalls import SYNTAXES

ANY_OBJECT = {"type": "object"}
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}  # a tool without `parameters`
# llama-cpp-python's converter lets a JSON string hold raw control characters (a newline in a value), which JSON
# forbids (RFC 8259) and json.loads refuses; llama.cpp's own converter excludes them, as this rule does.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


@dataclass(frozen=True)
class Structure:
    """What an answer must be. json_schema: JSON text of a schema; tools: ((name, JSON text of its parameters
    schema), ...) — the answer is one call of one of them, GLM-4's way. Both: either a call, or a plain answer
    (GLM-4's "\n", then JSON of the schema) — the response schema never constrains a call's arguments."""

    json_schema: str | None = None
    tools: tuple[tuple[str, str], ...] = ()
    syntax: str = "glm4"  # how a call and an answer are written (glm4.toolcalls.SYNTAXES)

    @cached_property
    def grammar(self) -> str:
        """The GBNF grammar, compiled once per Structure: validating a request compiles it, the engine reuses it."""
        return gbnf(self)

    @classmethod
    def json(cls, schema: dict | None = None) -> Structure:
        return cls(json_schema=json.dumps(schema or ANY_OBJECT))

    @classmethod
    def tool_call(cls, tools: list[dict], answer: Structure | None = None, syntax: str = "glm4") -> Structure:
        """From OpenAI `tools`: a call of one of them (or, with `answer`, an answer of its schema)."""
        def params(f: dict) -> dict:  # OpenAI: no `parameters` is a function of no arguments; {} takes any
            return NO_ARGUMENTS if f.get("parameters") is None else f["parameters"] or ANY_OBJECT

        schemas = tuple((t["function"]["name"], json.dumps(params(t["function"]))) for t in tools)
        return cls(json_schema=answer.json_schema if answer else None, tools=schemas, syntax=syntax)


def gbnf(structure: Structure) -> str:
    """The grammar (root rule `root`) for the structure."""
    from llama_cpp.llama_grammar import SchemaConverter

    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    schema = None if structure.json_schema is None else conv.resolve_refs(json.loads(structure.json_schema), "request")
    if schema is not None and not structure.tools:  # the prompt already holds the answer's marker
        conv.visit(schema, "")
        return conv.format_grammar().replace(_LOOSE_CHAR, _JSON_CHAR)
    syntax = SYNTAXES[structure.syntax]
    branches = [] if schema is None else [syntax.answer_grammar(conv.visit(schema, "answer"))]
    for i, (name, params) in enumerate(structure.tools):
        rule = conv.visit(conv.resolve_refs(json.loads(params), f"tool{i}"), f"tool{i}")
        branches.append(syntax.call_grammar(name, rule))
    return conv.format_grammar().replace(_LOOSE_CHAR, _JSON_CHAR) + f"\nroot ::= {' | '.join(branches)}\n"


def openvino_config(structure: Structure):
    """An openvino_genai.StructuredOutputConfig with the grammar (its own JSON-schema mode would let whitespace
    run on without end: a small model's greedy answer then never closes)."""
    import openvino_genai as ov_genai

    config = ov_genai.StructuredOutputConfig()
    config.grammar = structure.grammar
    return config
