"""glm-serve's request planning without a port: an OpenAI request becomes one typed plan — the prompt rendered once
with how to read the reply, sampling, any grammar — and the app serves it through an in-process client."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from glmkit.glm4 import families
from glmkit.runtimes import Runtime
from glmkit.runtimes.capabilities import Capabilities
from glmkit.runtimes.tokenizer import from_hf
from glmkit.serve import create_app
from glmkit.serve.plan import plan_chat, plan_completion
from glmkit.serve.protocol import APIError, ChatRequest, CompletionRequest
from glmkit.sources import embedded

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}
USER = [{"role": "user", "content": "Weather in Paris?"}]


class Scripted(Runtime):
    """glm4-tiny's tokenizer and template in front of a stand-in engine that writes fixed text."""

    backend = "scripted"
    capabilities = Capabilities(constrained=True, penalties=True)

    def __init__(self, text: str = "\nIt is sunny."):
        tok = from_hf(embedded.glm4_tiny_path())
        super().__init__(tok, families.CHAT_FORMATS["glm4"], 2048, "scripted")
        self.ids = tok.encode(text) + [tok.special_ids["<|observation|>"]]
        self.grammars: list[str] = []

    def _token_stream(self, prompt_ids, config, stats):
        if config.structure is not None:
            self.grammars.append(config.structure.grammar)  # what the engines hand their grammar sampler
        yield from self.ids


def _chat(**body) -> ChatRequest:
    return ChatRequest(model="m", messages=body.pop("messages", USER), **body)


@pytest.fixture(scope="module")
def rt():
    return Scripted()


def test_tool_choice_shapes_the_prompt_and_what_the_reply_may_be(rt):
    auto = plan_chat(_chat(tools=[WEATHER, ADD]), rt)
    assert auto.prompt.output.tools == {"get_weather", "add"} and auto.prompt.output.prefix == ""
    assert auto.prompt.ids[-1] == rt.tokenizer.special_ids["<|assistant|>"]
    none = plan_chat(_chat(tools=[WEATHER, ADD], tool_choice="none"), rt)
    assert none.prompt.output.tools == frozenset() and none.prompt.ids[:-1] == auto.prompt.ids  # + "\n"
    add = {"type": "function", "function": {"name": "add"}}
    named = plan_chat(_chat(tools=[WEATHER, ADD], tool_choice=add), rt)  # the grammar: that tool, its schema
    assert named.prompt.ids == auto.prompt.ids and [n for n, _ in named.config.structure.tools] == ["add"]
    assert json.loads(named.config.structure.tools[0][1]) == ADD["function"]["parameters"]
    one = plan_chat(_chat(tools=[WEATHER], tool_choice="required"), rt)
    assert [n for n, _ in one.config.structure.tools] == ["get_weather"]
    free = Scripted()
    free.capabilities = Capabilities()  # no constrained decoding: the turn is started with the tool's name
    unconstrained = plan_chat(_chat(tools=[WEATHER, ADD], tool_choice=add), free)
    assert unconstrained.prompt.output.prefix == "add\n" and unconstrained.config.structure is None
    assert rt.tokenizer.decode(unconstrained.prompt.ids[len(auto.prompt.ids):]) == "add\n"
    several = plan_chat(_chat(tools=[WEATHER, ADD], tool_choice="required"), rt)
    assert [n for n, _ in several.config.structure.tools] == ["get_weather", "add"]
    assert "grammar" in vars(several.config.structure)  # compiled while planning, before anything is queued


def test_response_format_plans_a_json_answer(rt):
    plan = plan_chat(_chat(response_format={"type": "json_schema", "json_schema": {
        "name": "w", "schema": {"type": "object", "properties": {"c": {"type": "number"}}}}}), rt)
    assert json.loads(plan.config.structure.json_schema)["properties"] == {"c": {"type": "number"}}
    assert plan.prompt.output.prefix == "\n" and plan.prompt.output.marker
    # under auto with tools: one grammar, a declared call or an answer of the schema; tools stay on
    agent = plan_chat(_chat(tools=[WEATHER], response_format={"type": "json_object"}), rt)
    assert agent.prompt.output.tools == {"get_weather"} and agent.prompt.output.prefix == ""
    assert agent.config.structure.json_schema and [n for n, _ in agent.config.structure.tools] == ["get_weather"]
    assert 'root ::= "\\n" answer | "get_weather\\n" tool0' in agent.config.structure.grammar
    # a forced call leaves no text answer: its arguments follow the tool's schema, never response_format's
    both = plan_chat(_chat(tools=[WEATHER, ADD], tool_choice="required", response_format={"type": "json_object"}), rt)
    assert [n for n, _ in both.config.structure.tools] == ["get_weather", "add"]


@pytest.mark.parametrize("body,param", [
    (dict(n=17), "n"), (dict(stop=["a", "b", "c", "d", "e"]), "stop"), (dict(max_tokens=4096), "max_tokens"),
    (dict(tool_choice="required"), "tool_choice"), (dict(response_format={"type": "xml"}), "response_format"),
    (dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
    (dict(messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]), "messages.0.content.1.type"),
    (dict(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA"}}]}]),
     "messages.0.content.0.type"),
    (dict(logit_bias={"42": 5}), "logit_bias"),
    (dict(functions=[WEATHER["function"]]), "functions"), (dict(function_call="auto"), "function_call"),
])
def test_what_cannot_be_honoured_is_refused_by_name(rt, body, param):
    with pytest.raises(APIError) as e:
        plan_chat(_chat(**body), rt)
    assert e.value.status == 400 and e.value.param == param


def test_sampling_follows_openai_and_the_model_card(rt):
    plan = plan_chat(_chat(max_tokens=7, seed=2**40 + 5, stop="END", temperature=0.2), rt)
    c = plan.config
    assert (c.max_new_tokens, c.seed, c.stop, c.temperature, c.top_p) == (7, 5, ("END",), 0.2, 1.0)
    assert plan_chat(_chat(), rt).config.temperature == 1.0  # OpenAI's default where the card says nothing
    assert plan_chat(_chat(), rt).config.max_new_tokens == rt.context_length - len(plan.prompt.ids)


def test_a_completion_prompt_starts_like_glm4s_own_tokenizer(rt):
    plan = plan_completion(CompletionRequest(model="m", prompt="def add(a, b):"), rt)
    s = rt.tokenizer.special_ids
    assert plan.prompt.ids[:2] == [s["[gMASK]"], s["<sop>"]] and not plan.chat and plan.config.max_new_tokens == 16


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_request_renders_its_template_once(stream):
    """The plan's rendering is the one generated from: the template runs once per request, streamed or not."""
    rt = Scripted('get_weather\n{"city": "Paris"}')
    rendered = []
    render = rt.tokenizer.render_chat
    rt.tokenizer.render_chat = lambda *a, **k: rendered.append(1) or render(*a, **k)
    with TestClient(create_app(rt, "m")) as client:
        body = {"model": "m", "messages": USER, "tools": [WEATHER, ADD], "stream": stream}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        if stream:
            chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
            calls = [t for ch in chunks for c in ch["choices"] for t in c["delta"].get("tool_calls") or []]
            assert calls[0]["function"]["name"] == "get_weather" and chunks[-1]["choices"][0]["finish_reason"] \
                == "tool_calls"
        else:
            message = r.json()["choices"][0]["message"]
            assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert len(rendered) == 1


def test_a_grammar_is_compiled_once_per_request(monkeypatch):
    from glmkit.runtimes import structure

    compiled = []
    gbnf = structure.gbnf
    monkeypatch.setattr(structure, "gbnf", lambda s: compiled.append(1) or gbnf(s))
    rt = Scripted('add\n{"a": 1, "b": 2}')
    with TestClient(create_app(rt, "m")) as client:
        body = {"model": "m", "messages": USER, "tools": [WEATHER, ADD], "tool_choice": "required"}
        r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert len(compiled) == 1 and len(rt.grammars) == 1


def _post(client, path, **kw):
    r = client.post(path, **kw)
    return r.status_code, r.json()["error"]


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi \ud800"}]}, "messages.0.content"),
    ("/v1/completions", {"prompt": "def f(\ud800):"}, "prompt"),
    ("/v1/chat/completions", {"messages": USER, "tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "\udc00 bad"}}]}, "tools.0.function.description"),
])
def test_a_lone_surrogate_is_a_400_naming_the_field(path, body, param):
    rt = Scripted()
    with TestClient(create_app(rt, "m"), raise_server_exceptions=False) as client:
        raw = json.dumps({"model": "m", **body})  # json.dumps writes the surrogate as the escape \ud800
        status, error = _post(client, path, content=raw, headers={"content-type": "application/json"})
    assert status == 400 and error["param"] == param and "surrogate" in error["message"]


def test_every_error_is_an_openai_error_object():
    with TestClient(create_app(Scripted(), "m"), raise_server_exceptions=False) as client:
        r = client.get("/v1/nowhere")
        assert r.status_code == 404 and "no route /v1/nowhere" in r.json()["error"]["message"]
        r = client.get("/v1/chat/completions")
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
        status, error = _post(client, "/v1/chat/completions", content=b'{"model": "m", "messages": \xff\xfe}',
                              headers={"content-type": "application/json"})
        assert status == 400 and "not valid" in error["message"]
        status, error = _post(client, "/v1/chat/completions", content=b'{"model": "m", "messages": [}',
                              headers={"content-type": "application/json"})
        assert status == 400 and "not valid JSON" in error["message"] and error["param"] is None


def test_a_chunked_body_over_the_limit_is_refused_while_reading():
    rt = Scripted()
    rendered = []
    render = rt.tokenizer.render_chat
    rt.tokenizer.render_chat = lambda *a, **k: rendered.append(1) or render(*a, **k)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    with TestClient(create_app(rt, "m", max_body_bytes=4096)) as client:
        r = client.post("/v1/chat/completions", content=iter([body[:3000], body[3000:]]),
                        headers={"content-type": "application/json"})  # an iterator: chunked, no Content-Length
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert r.status_code == 413 and "4096 bytes" in r.json()["error"]["message"] and not rendered
        small = json.dumps({"model": "m", "messages": USER}).encode()
        r = client.post("/v1/chat/completions", content=iter([small[:10], small[10:]]),
                        headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "It is sunny."


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_cut_by_max_tokens_is_length_without_a_partial_name(stream):
    rt = Scripted('get_weather\n{"city": "Paris"}')
    with TestClient(create_app(rt, "m")) as client:
        body = {"model": "m", "messages": USER, "tools": [WEATHER, ADD], "max_tokens": 2, "stream": stream}
        r = client.post("/v1/chat/completions", json=body)
    if stream:
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        content = "".join(c["delta"].get("content") or "" for ch in chunks for c in ch["choices"])
        finish = [c["finish_reason"] for ch in chunks for c in ch["choices"] if c["finish_reason"]]
        assert content == "" and finish == ["length"]
    else:
        choice = r.json()["choices"][0]
        assert not choice["message"]["content"] and choice["finish_reason"] == "length"
        assert "tool_calls" not in choice["message"]


@pytest.mark.parametrize("parallel", [None, True, False])
def test_parallel_tool_calls_false_ends_the_turn_after_its_first_call(parallel):
    rt = Scripted('add\n{"a": 1}<|assistant|>get_weather\n{"city": "Oslo"}')
    with TestClient(create_app(rt, "m")) as client:
        body = {"model": "m", "messages": USER, "tools": [WEATHER, ADD]}
        if parallel is not None:
            body["parallel_tool_calls"] = parallel
        choice = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    names = [c["function"]["name"] for c in choice["message"]["tool_calls"]]
    assert names == (["add"] if parallel is False else ["add", "get_weather"])
    assert choice["finish_reason"] == "tool_calls"


def test_a_unicode_and_transport_fuzz_finds_no_server_error():
    """Bodies built from strings with lone surrogates, control characters and non-BMP text, in every field a
    client fills, sent whole and chunked: every answer is a 200 or a 4xx error object, never a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.text(st.characters(codec=None, categories=None), max_size=12) | st.sampled_from(
        ["\ud800", "\udfff x", "\x00\x1b[31m", "\u202e", "𝔊𝔏𝔐", "<|assistant|>", "\r\n\t"])
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "tool", "assistant"]),
                                     "content": text | st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                                                       "text": text}), max_size=2)})
    body = st.fixed_dictionaries({"model": st.just("m") | text, "messages": st.lists(message, min_size=1, max_size=3)},
                                 optional={"stop": text | st.lists(text, max_size=5), "max_tokens": st.integers(1, 64),
                                           "tools": st.just([WEATHER]), "tool_choice": st.sampled_from(
                                               ["auto", "none", "required"]), "user": text})
    app = create_app(Scripted('get_weather\n{"city": "Paris"}'), "m", max_body_bytes=4096)

    with TestClient(app, raise_server_exceptions=False) as client:
        @settings(max_examples=150, derandomize=True, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(body, st.booleans())
        def check(data, chunked):
            raw = json.dumps(data).encode()  # surrogates travel as JSON escapes, as a client would send them
            content = iter([raw[: len(raw) // 2], raw[len(raw) // 2:]]) if chunked else raw
            r = client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
            assert r.status_code < 500, (r.status_code, r.text[:300], data)
            if r.status_code >= 400:
                assert set(r.json()["error"]) >= {"message", "type", "param"}

        check()
