"""The OpenAI request bodies glm-serve accepts, and its OpenAI-style errors.

Fields glm-serve cannot honour are refused by name (400) rather than ignored, so a client never gets an answer to
a question it did not ask; fields that change nothing here (`user`, `metadata`, `store`, …) are accepted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class APIError(Exception):
    """An error the client caused or can act on: HTTP status, OpenAI error type, message naming the fix."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionDef(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDef


class ToolCallFunction(BaseModel):
    name: str
    arguments: str


class ToolCallIn(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunction


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None  # a Z1 client may send it back; it never enters the prompt


class StreamOptions(BaseModel):
    include_usage: bool = False


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: dict[str, str]


class Sampling(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = 1  # null is 1, as OpenAI's schema has it
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0)
    logprobs: bool | int | None = None  # chat: true/false (with top_logprobs); completions: 0 to 5
    response_format: dict[str, Any] | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]  # text, or token ids as they are
    max_tokens: int | None = Field(None, ge=0)  # 0: nothing generated (with echo: the prompt's logprobs)
    echo: bool = False
    suffix: str | None = None


class TokenizeRequest(_Body):
    """vLLM's /tokenize, which lm-evaluation-harness's remote tokenizer calls."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True  # GLM-4's: [gMASK]<sop> in front


class DetokenizeRequest(_Body):
    model: str | None = None
    tokens: list[int]
