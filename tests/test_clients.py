"""The client libraries people point at a local endpoint, each driving a real glm-serve on both engines: LangChain,
LlamaIndex, the OpenAI Agents SDK and the `openai` SDK's structured helpers. Each asks for structured output the way
the library does it (a forced tool, `tool_choice: "required"`, a json_schema response_format, tools beside an
output type) and must get a result its own validation accepts.

glm4-tiny knows the weather tool (scripts/train_glm4_tiny.py); every string field is bounded (max_length) so a
constrained answer ends within the token budget whatever the model would rather say."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel, Field
from servers import serving


class Weather(BaseModel):
    """Current weather in a city"""

    city: str = Field(max_length=24)


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int


class Report(BaseModel):
    summary: str = Field(max_length=40)


OSLO = "Tell me the weather for Oslo."


@pytest.fixture(scope="module", params=["llamacpp", "openvino"])
def base(request, tiny_artifacts):
    with serving(tiny_artifacts[request.param]) as url:
        yield f"{url}/v1"


def test_langchain_structured_output_both_methods_and_a_named_tool(base):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="tiny", base_url=base, api_key="none", temperature=0, max_tokens=96, max_retries=0)
    for method in ("function_calling", "json_schema"):
        out = llm.with_structured_output(Weather, method=method).invoke(OSLO)
        assert isinstance(out, Weather), (method, out)

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city"""
        return "Sunny"

    msg = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("def read_config(path):")
    [call] = msg.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str)


def test_llamaindex_structured_predict(base):
    from llama_index.core.prompts import PromptTemplate
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model="tiny", api_base=base, api_key="none", is_chat_model=True, is_function_calling_model=True,
                     context_window=4096, temperature=0, max_tokens=96, max_retries=0)
    out = llm.structured_predict(Weather, PromptTemplate("Tell me the weather for {city}."), city="Oslo")
    assert isinstance(out, Weather)
    out = llm.as_structured_llm(Person).complete("def read_config(path):")
    assert isinstance(out.raw, Person)


def test_agents_sdk_output_type_with_a_function_tool(base):
    """The SDK sends the output type as a strict json_schema response_format beside the tools, under "auto": the
    model still calls the tool, then answers in the schema. The tool's schema is the one glm4-tiny was trained on
    (a pydantic-generated one, with titles, is beyond a 1 M-parameter model's choice of a call under "auto")."""
    from agents import Agent, FunctionTool, ModelSettings, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    calls = []

    async def get_weather(ctx, arguments: str) -> str:
        calls.append(json.loads(arguments)["city"])
        return "Sunny, 21 °C"

    weather = FunctionTool(name="get_weather", description="Current weather in a city", on_invoke_tool=get_weather,
                           params_json_schema={"type": "object", "properties": {"city": {"type": "string"}},
                                               "required": ["city"]}, strict_json_schema=False)

    async def run():
        client = AsyncOpenAI(base_url=base, api_key="none", max_retries=0, timeout=120)
        agent = Agent(name="weather", model=OpenAIChatCompletionsModel(model="tiny", openai_client=client),
                      tools=[weather], output_type=Report,
                      model_settings=ModelSettings(temperature=0, max_tokens=120))
        try:
            return await Runner.run(agent, OSLO, max_turns=4)
        finally:
            await client.close()

    result = asyncio.run(run())
    assert calls == ["Oslo"]  # the tool was called, with the request's argument
    assert isinstance(result.final_output, Report)


def test_openai_sdk_parse_and_a_named_tool(base):
    import openai

    client = openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=120)
    r = client.chat.completions.parse(model="tiny", messages=[{"role": "user", "content": "def read_config(path):"}],
                                      response_format=Person, temperature=0, max_tokens=96)
    assert isinstance(r.choices[0].message.parsed, Person)
    r = client.chat.completions.parse(model="tiny", messages=[{"role": "user", "content": "def read_config(path):"}],
                                      tools=[openai.pydantic_function_tool(Weather, name="get_weather")],
                                      tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                      temperature=0, max_tokens=96)
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and isinstance(call.function.parsed_arguments, Weather)
