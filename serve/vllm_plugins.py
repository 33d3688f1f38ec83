"""glmkit's GLM-4 tool-call and Z1 reasoning parsers as vLLM plugins — the same parsing glm-serve runs
(runtimes/tools.py, runtimes/streaming.py), for the engine that scales past one machine.

    vllm serve DIR --enable-auto-tool-choice --tool-parser-plugin PATH/vllm_plugins.py --tool-call-parser glmkit-glm4
                   --reasoning-parser-plugin PATH/vllm_plugins.py --reasoning-parser glmkit-z1   # Z1 models

`glm-vllm DIR` prints that command for a glm-convert --to hf output. Imported by vLLM only; glmkit itself never
imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence

from vllm.entrypoints.generate.base.protocol import (DeltaFunctionCall, DeltaMessage, DeltaToolCall,
                                                     ExtractedToolCallInformation, FunctionCall, ToolCall)
from vllm.reasoning.abs_reasoning_parsers import ReasoningParser, ReasoningParserManager
from vllm.tool_parsers.abstract_tool_parser import ToolParser, ToolParserManager

from glmkit.runtimes import tools as glm_tools
from glmkit.runtimes.base import split_reasoning
from glmkit.runtimes.streaming import THINK_END, TextAssembler

THINK_START = "<think>"


def _names(request) -> set[str]:
    return {t.function.name for t in (getattr(request, "tools", None) or []) if getattr(t, "function", None)}


@ToolParserManager.register_module("glmkit-glm4")
class GLM4ToolParser(ToolParser):
    """GLM-4-0414's and glm-4-9b-chat's `name\\n{arguments}` calls (several joined by `<|assistant|>`)."""

    def __init__(self, tokenizer, tools=None, **kwargs):
        super().__init__(tokenizer, tools)
        self.router: glm_tools.StreamRouter | None = None
        self.sent = 0  # calls streamed so far

    def adjust_request(self, request):
        request = super().adjust_request(request)
        if request.tools:  # several calls in one turn are joined by <|assistant|>, a special token
            request.skip_special_tokens = False
        return request

    def extract_tool_calls(self, model_output: str, request) -> ExtractedToolCallInformation:
        content, calls = glm_tools.parse(model_output, _names(request))
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
        if self.router is None:
            self.router = glm_tools.StreamRouter(_names(request))
        text = self.router.feed(delta_text)
        if self.router.mode != "call":
            return DeltaMessage(content=text) if text else None
        pieces = self.router.buf.split(glm_tools.ASSISTANT)
        done = [c for c in (glm_tools.parse_call(p, self.router.names) for p in pieces) if c]
        if len(done) == len(pieces) and len(done) > self.sent:  # every piece so far is a whole call
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
    what follows `</think>` — split by the same TextAssembler glm-serve streams with."""

    def __init__(self, tokenizer, *args, **kwargs):
        super().__init__(tokenizer, *args, **kwargs)
        self.text = TextAssembler(thinks=True)
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
        answer, thought = split_reasoning(model_output, thinks=True)
        return thought or None, answer or None

    def extract_reasoning_streaming(self, previous_text: str, current_text: str, delta_text: str,
                                    previous_token_ids, current_token_ids, delta_token_ids) -> DeltaMessage | None:
        reasoning, content = "", ""
        for piece in self.text.push(delta_text):
            if piece.reasoning:
                reasoning += piece.text
            else:
                content += piece.text
        # ended once the answer has begun: the whitespace between </think> and it is the assembler's to drop
        self.ended = not self.text.in_reasoning and bool(self.text.content)
        if not (reasoning or content):
            return None
        return DeltaMessage(reasoning=reasoning or None, content=content or None)
