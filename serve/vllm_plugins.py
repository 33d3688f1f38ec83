"""glmkit's GLM-4 tool-call and Z1 reasoning parsers as vLLM plugins — the output parser glm-serve runs
(glmkit.glm4.parser), for the engine that scales past one machine.

    vllm serve DIR --enable-auto-tool-choice --tool-parser-plugin PATH/vllm_plugins.py --tool-call-parser glmkit-glm4
                   --reasoning-parser-plugin PATH/vllm_plugins.py --reasoning-parser glmkit-z1   # Z1 models

`glm-vllm DIR` prints that command for a glm-convert --to hf output. Imported by vLLM only; glmkit itself never
imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence

from vllm.entrypoints.generate.base.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
)
from vllm.reasoning.abs_reasoning_parsers import ReasoningParser, ReasoningParserManager
from vllm.tool_parsers.abstract_tool_parser import ToolParser, ToolParserManager

from glmkit.glm4.parser import THINK_END, THINK_START, OutputParser, OutputSpec, Reasoning, Text, parse_text


def _spec(request) -> OutputSpec:
    """A vLLM chat request's output, as glm-serve reads it: the turn starts after <|assistant|>."""
    names = frozenset(t.function.name for t in (getattr(request, "tools", None) or []) if getattr(t, "function", None))
    return OutputSpec(marker=True, tools=names)


@ToolParserManager.register_module("glmkit-glm4")
class GLM4ToolParser(ToolParser):
    """GLM-4-0414's and glm-4-9b-chat's `name\\n{arguments}` calls (several joined by `<|assistant|>`)."""

    def __init__(self, tokenizer, tools=None, **kwargs):
        super().__init__(tokenizer, tools)
        self.parser: OutputParser | None = None
        self.sent = 0  # calls streamed so far

    def adjust_request(self, request):
        request = super().adjust_request(request)
        if request.tools:  # several calls in one turn are joined by <|assistant|>, a special token
            request.skip_special_tokens = False
        return request

    def extract_tool_calls(self, model_output: str, request) -> ExtractedToolCallInformation:
        content, _, calls = parse_text(model_output, _spec(request))
        # tools_called even without a call: vLLM then takes the content from here, where GLM-4's "\n" answer
        # marker is dropped, rather than the raw text (finish_reason still follows the calls)
        return ExtractedToolCallInformation(
            tools_called=True, content=content or None,
            tool_calls=[ToolCall(id=c.id, type="function", function=FunctionCall(name=c.name, arguments=c.arguments))
                        for c in calls])

    def extract_tool_calls_streaming(self, previous_text: str, current_text: str, delta_text: str,
                                     previous_token_ids: Sequence[int], current_token_ids: Sequence[int],
                                     delta_token_ids: Sequence[int], request) -> DeltaMessage | None:
        """An answer streams as content once its first line shows it is no call; a call streams whole as each
        `{…}` closes (vLLM gives a legacy parser no end-of-stream call to release a held call that never closes)."""
        if self.parser is None:
            self.parser = OutputParser(_spec(request))
        text = "".join(e.text for e in self.parser.feed(delta_text) if isinstance(e, Text))
        if not self.parser.in_call:
            return DeltaMessage(content=text) if text else None
        done = self.parser.calls_so_far()  # every piece so far is a whole call
        if len(done) > self.sent:
            new = done[self.sent:]
            deltas = []
            for i, call in enumerate(new, start=self.sent):
                self.prev_tool_call_arr.append({"name": call.name, "arguments": call.arguments})
                self.streamed_args_for_tool.append(call.arguments)
                deltas.append(DeltaToolCall(index=i, id=call.id, type="function",
                                            function=DeltaFunctionCall(name=call.name, arguments=call.arguments)))
            self.sent = len(done)
            self.current_tool_id = self.sent - 1
            return DeltaMessage(tool_calls=deltas)
        return None


@ReasoningParserManager.register_module("glmkit-z1")
class Z1ReasoningParser(ReasoningParser):
    """GLM-Z1's template opens `<think>` in the prompt: the answer starts inside the thought and the content is
    what follows `</think>` — split by the same output parser glm-serve streams with."""

    def __init__(self, tokenizer, *args, **kwargs):
        super().__init__(tokenizer, *args, **kwargs)
        self.parser = OutputParser(OutputSpec(thinks=True))
        self.ended = False

    @property
    def reasoning_start_str(self) -> str:
        return THINK_START

    @property
    def reasoning_end_str(self) -> str:
        return THINK_END

    def _decode(self, ids: Sequence[int]) -> str:
        return self.model_tokenizer.decode(list(ids))

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        text = self._decode(input_ids)
        return text.rfind(THINK_END) >= text.rfind(THINK_START)  # no thought open (both -1: none at all)

    def is_reasoning_end_streaming(self, input_ids, delta_ids) -> bool:
        return self.ended

    def extract_content_ids(self, input_ids: list[int]) -> list[int]:
        for i in range(len(input_ids)):
            if THINK_END in self._decode(input_ids[: i + 1]):
                return list(input_ids[i + 1:])
        return []

    def extract_reasoning(self, model_output: str, request) -> tuple[str | None, str | None]:
        answer, thought, _ = parse_text(model_output, OutputSpec(thinks=True))
        return thought or None, answer or None

    def extract_reasoning_streaming(self, previous_text: str, current_text: str, delta_text: str,
                                    previous_token_ids, current_token_ids, delta_token_ids) -> DeltaMessage | None:
        events = self.parser.feed(delta_text)
        reasoning = "".join(e.text for e in events if isinstance(e, Reasoning))
        content = "".join(e.text for e in events if isinstance(e, Text))
        # ended once the answer has begun: the whitespace between </think> and it is the parser's to drop
        self.ended = bool(self.parser.content)
        if not (reasoning or content):
            return None
        return DeltaMessage(reasoning=reasoning or None, content=content or None)
