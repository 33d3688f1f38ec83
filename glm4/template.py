"""Chat templates rendered with jinja2 the way transformers renders them, without transformers.

A checkpoint's template was written against transformers' environment, so the same messages must give the same
text here, byte for byte — or the prompt's token ids, and the model's answer, silently differ from the original's.
What that environment is (transformers 4.57, `chat_template_utils`): a sandbox that cannot change the objects it
is given; `trim_blocks` and `lstrip_blocks`; `break`/`continue`; a `tojson` that keeps non-ASCII and HTML as they
are (jinja's own escapes `<` and `'`) and takes indent, separators and sort_keys; `raise_exception(msg)` and
`strftime_now(fmt)`; and `{% generation %}` blocks, which only mark assistant text and render their body.
Tests compare this renderer with transformers' on the templates real GLM-4 checkpoints ship.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from glmkit.glm4.errors import GlmkitError


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(source: str):
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}…{% endgeneration %}`: renders its body (transformers uses it to mask training loss)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise GlmkitError(f"the chat template does not parse (line {e.lineno}: {e.message}); fix or replace the "
                          "checkpoint's chat_template") from None


def render_turns(turns: list[tuple[str, str]], source: str | None = None) -> str:
    """(user, assistant) exchanges as GLM-4's chat template writes them (`source`: another template), with no
    generation prompt: the text verification, calibration and benchmarks read, rendered as every prompt is."""
    from .families import GLM4_CHAT_TEMPLATE

    messages = [m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    return render(source or GLM4_CHAT_TEMPLATE, messages, add_generation_prompt=False)


def render(source: str, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = True,
           **context) -> str:
    """The prompt text `source` gives for `messages` (and OpenAI-style `tools`); `context` adds template variables
    (special tokens, `enable_thinking`, …) as `apply_chat_template`'s keyword arguments do."""
    import jinja2

    try:
        return compile_template(source).render(messages=messages, tools=tools, documents=None,
                                               add_generation_prompt=add_generation_prompt, **context)
    except jinja2.exceptions.TemplateError as e:
        raise GlmkitError(f"the chat template refused these messages: {e}") from None
