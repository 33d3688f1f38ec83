"""glm-serve as clients use it: a real server on 127.0.0.1 and a free port, driven by the official `openai` client
(and by raw HTTP for what a client library would refuse to send). Answers are checked against the same runtime
run in-process: greedy text and token counts must be identical."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from openai import OpenAI
from servers import serving

from glmkit.runtimes import GenerationConfig, load

USER = [{"role": "user", "content": "def read_config(path):"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers",
                                        "parameters": {"type": "object", "properties": {
                                            "a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}


@pytest.fixture(scope="module")
def artifacts(tiny_artifacts):
    return tiny_artifacts


@pytest.fixture(scope="module")
def gguf_server(artifacts):
    with serving(artifacts["llamacpp"], "--n-ctx", "1024") as base:
        yield base


def _client(base: str, key: str = "none") -> OpenAI:
    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)


def _alone(model: str, prompt, max_tokens: int, **options):
    with load(model, **options) as rt:
        return rt.generate(prompt, GenerationConfig(max_new_tokens=max_tokens))


@pytest.mark.parametrize("backend", ["llamacpp", "openvino", "transformers"])
def test_chat_stream_and_not_equal_the_runtime_alone(artifacts, backend):
    want = _alone(artifacts[backend], USER, 24)
    with serving(artifacts[backend]) as base:
        c = _client(base)
        r = c.chat.completions.create(model="tiny", messages=USER, max_tokens=24, temperature=0)
        assert r.choices[0].message.content == want.text
        assert r.usage.completion_tokens == len(want.token_ids) and r.usage.prompt_tokens == want.prompt_tokens
        assert r.choices[0].finish_reason == ("length" if want.finish_reason == "length" else "stop")
        chunks = list(c.chat.completions.create(model="tiny", messages=USER, max_tokens=24, temperature=0,
                                                stream=True, stream_options={"include_usage": True}))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == want.text
        assert chunks[-1].usage.completion_tokens == len(want.token_ids) and not chunks[-1].choices
        # the same prompt again: KV reused. openvino-genai's ContinuousBatchingPipeline caches prefixes but does
        # not count its hits (2026.4.1), so glm-serve on OpenVINO says nothing rather than a false 0
        if backend == "openvino":
            assert r.usage.prompt_tokens_details is None and chunks[-1].usage.prompt_tokens_details is None
        else:
            assert r.usage.prompt_tokens_details.cached_tokens == 0
            assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0


def test_completions_add_the_glm_prefix_and_equal_the_runtime(artifacts, gguf_server):
    want = _alone(artifacts["llamacpp"], "import os\n", 12, n_ctx=1024)
    r = _client(gguf_server).completions.create(model="tiny", prompt="import os\n", max_tokens=12, temperature=0)
    assert r.choices[0].text == want.text and r.usage.prompt_tokens == want.prompt_tokens
    with load(artifacts["llamacpp"], n_ctx=1024) as rt:
        assert rt.prompt_ids("import os\n")[:2] == [rt.tokenizer.special_ids["[gMASK]"],
                                                    rt.tokenizer.special_ids["<sop>"]]


def test_control_tokens_never_come_back_as_text(gguf_server):
    """glm4-tiny answers `def read_config(path):` with `<|assistant|>` first: a control token, which OpenAI and
    vLLM never return as text (a client sending it back would have it read as a real turn). The text is
    transformers' own greedy answer decoded without special tokens, streamed or not."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from glmkit.sources.source import transformers_dir

    source = str(transformers_dir("glm4-tiny"))
    tok = AutoTokenizer.from_pretrained(source)
    ids = tok("[gMASK]<sop>def read_config(path):", add_special_tokens=False, return_tensors="pt").input_ids
    out = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    assert tok.convert_ids_to_tokens(int(out[0, ids.shape[1]])) == "<|assistant|>"  # what makes this a test
    want = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    client = _client(gguf_server)
    r = client.completions.create(model="tiny", prompt="def read_config(path):", max_tokens=16, temperature=0)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="def read_config(path):", max_tokens=16, temperature=0, stream=True) if c.choices)
    assert r.choices[0].text == streamed == want


def test_models_and_health(gguf_server):
    models = _client(gguf_server).models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert httpx.get(f"{gguf_server}/health").json()["backend"] == "llamacpp"


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"model": "tiny", "messages": "hello"}), 400, "messages"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 17}), 400, "n: give 1 to 16"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6}), 400,
     "does not fit"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x " * 2000}]}), 400, "shorten"),
    (json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}), 404, "not served here"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "presence_penalty": 3}), 400,
     "presence_penalty"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                 "response_format": {"type": "yaml"}}), 400, "response_format type 'yaml'"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                 "response_format": {"type": "json_schema", "json_schema": {"schema": [1]}}}), 400, "json_schema"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                 "response_format": {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/nowhere"}}}}), 400,
     "cannot enforce this schema"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}), 400,
     "temperature"),
    (json.dumps({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}), 400, "role"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [
        {"type": "function", "function": {"name": ""}}]}), 400, "tools.0.function.name"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER],
                 "tool_choice": {"type": "function", "function": {"name": "add"}}}), 400, "not among the tools"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}), 400,
     "tool_choice needs tools"),
]


@pytest.mark.parametrize("body,status,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_a_4xx_that_names_the_problem(gguf_server, body, status, words):
    r = httpx.post(f"{gguf_server}/v1/chat/completions", content=body, headers={"content-type": "application/json"},
                   timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"] and error["type"] and "Traceback" not in r.text


def test_tools_for_a_template_without_a_tools_block_are_refused():
    """Rather than silently dropping them: such a model would answer as if it had no tools."""
    from types import SimpleNamespace

    from glmkit.glm4.families import CHAT_FORMATS
    from glmkit.runtimes.capabilities import Capabilities
    from glmkit.serve.plan import plan_chat
    from glmkit.serve.protocol import APIError, ChatRequest

    plain = SimpleNamespace(tokenizer=SimpleNamespace(chat_template="{% for m in messages %}{{ m.content }}"
                                                                    "{% endfor %}"), chat_format=CHAT_FORMATS["glm4"],
                            capabilities=Capabilities())
    body = ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], tools=[WEATHER])
    with pytest.raises(APIError, match="no tools block"):
        plan_chat(body, plain)


def test_health_reports_the_host_ram_prompt_cache(gguf_server):
    cache = httpx.get(f"{gguf_server}/health").json()["prompt_cache"]
    assert cache["limit_bytes"] == 1024 * 2**20 and cache["bytes"] <= cache["limit_bytes"]


def test_an_oversized_body_is_refused_before_it_is_read(gguf_server):
    r = httpx.post(f"{gguf_server}/v1/chat/completions", content=b"x" * (5 * 2**20),
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "bytes" in r.json()["error"]["message"]


def test_the_api_key_is_enforced(artifacts):
    with serving(artifacts["llamacpp"], "--n-ctx", "512", env={"GLMKIT_API_KEY": "s3cret"}) as base:
        for key in ("none", "s3cret-but-longer", "s3cre"):
            with pytest.raises(Exception) as e:
                _client(base, key).models.list()
            assert getattr(e.value, "status_code", None) == 401
        assert httpx.get(f"{base}/v1/models").status_code == 401
        assert [m.id for m in _client(base, "s3cret").models.list().data] == ["tiny"]
        assert httpx.get(f"{base}/health").status_code == 200  # a liveness probe needs no key


@pytest.mark.parametrize("backend", ["llamacpp", "openvino"])
def test_concurrent_streams_are_batched_and_each_equals_the_request_alone(artifacts, backend):
    """A long stream runs (glm4-tiny's answer to this prompt goes on for its whole budget, seconds); two short
    streams sent beside it are each token for token what they are when run alone (glm-serve batches
    --max-concurrency generations: llama.cpp sequences in one llama_decode, openvino-genai's
    ContinuousBatchingPipeline; test_runtimes checks the batching itself without clocks)."""
    prompts = [[{"role": "user", "content": p}] for p in ("def read_config(path):", "class Stack:")]
    with load(artifacts[backend], n_ctx=2048) as rt:
        want = [rt.generate(p, GenerationConfig(max_new_tokens=32)).text for p in prompts]
    got = [None, None]
    long = {"model": "tiny", "messages": [{"role": "user", "content": "import sys\nimport sys"}], "temperature": 0,
            "stream": True}

    with serving(artifacts[backend], "--n-ctx", "2048", "--max-concurrency", "3") as base:
        def ask(i):
            s = _client(base).chat.completions.create(model="tiny", messages=prompts[i], max_tokens=32,
                                                      temperature=0, stream=True)
            got[i] = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)

        with httpx.stream("POST", f"{base}/v1/chat/completions", json=long, timeout=60) as r:
            lines = r.iter_lines()  # held: a dropped iterator closes the response, and the server cancels
            assert next(lines).startswith("data: ")
            threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert got == want


def _wait_idle(base: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        health = httpx.get(f"{base}/health").json()
        if health["requests_in_progress"] == 0 and not health["generating"]:
            return health
        time.sleep(0.05)
    raise AssertionError("glm-serve still busy after the client left")


def test_beyond_the_queue_is_429_with_retry_after_and_a_disconnect_cancels(artifacts):
    """One generation at a time and one waiting: a second request waits, a third is refused at once; the first
    client hangs up after one event and the server stops its generation (glm4-tiny's greedy answer to this prompt
    runs on for its whole 2,000-token budget, seconds, where the hang-up comes milliseconds in), and the waiting
    request is then served."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": "import sys\nimport sys"}], "temperature": 0,
            "stream": True}
    queued = {}

    def wait_in_queue(base):
        queued["r"] = httpx.post(f"{base}/v1/chat/completions", json={**body, "stream": False, "max_tokens": 8},
                                 timeout=60)

    with serving(artifacts["llamacpp"], "--n-ctx", "2048", "--max-concurrency", "1", "--max-queue", "1") as base:
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            waiter = threading.Thread(target=wait_in_queue, args=(base,))
            waiter.start()
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/health").json()["requests_in_progress"] < 2:
                assert time.monotonic() < deadline, "the second request was not queued"
                time.sleep(0.02)
            busy = httpx.post(f"{base}/v1/chat/completions", json={**body, "stream": False}, timeout=60)
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["type"] == "rate_limit_error"
            assert "r" not in queued  # still waiting behind the stream
        waiter.join(60)
        assert queued["r"].status_code == 200 and queued["r"].json()["usage"]["completion_tokens"] == 8
        health = _wait_idle(base)
        assert (health["generations_cancelled"], health["generations_finished"]) == (1, 1)


def test_a_non_streamed_request_whose_client_leaves_is_cancelled(artifacts):
    """The PyTorch reference takes tens of seconds for this 2,000-token greedy answer; the client gives up after
    one second and the server stops the generation rather than running it to the end."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": "import sys\nimport sys"}], "temperature": 0,
            "max_tokens": 1900}
    with serving(artifacts["transformers"]) as base:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=1))
        health = _wait_idle(base, seconds=120)
        assert (health["generations_cancelled"], health["generations_finished"]) == (1, 0)


# -- GLM-4 tool calls and Z1 reasoning on the embedded models (trained on both: scripts/train_glm4_tiny.py) -------

def _ask(client, messages, stream: bool, **kw) -> dict:
    """One assistant turn as {content, reasoning, calls: [(id, name, args)], finish}, streamed or not."""
    kw.setdefault("max_tokens", 96)
    kw.setdefault("temperature", 0)
    if not stream:
        r = client.chat.completions.create(model="tiny", messages=messages, **kw)
        m = r.choices[0].message
        return {"content": m.content, "reasoning": getattr(m, "reasoning_content", None),
                "calls": [(c.id, c.function.name, json.loads(c.function.arguments)) for c in m.tool_calls or []],
                "finish": r.choices[0].finish_reason}
    content, reasoning, calls, finish = "", "", {}, None
    for ch in client.chat.completions.create(model="tiny", messages=messages, stream=True, **kw):
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        content += d.content or ""
        reasoning += getattr(d, "reasoning_content", None) or ""
        for t in d.tool_calls or []:
            slot = calls.setdefault(t.index, {"id": None, "name": "", "args": ""})
            slot["id"] = t.id or slot["id"]
            slot["name"] += (t.function.name or "") if t.function else ""
            slot["args"] += (t.function.arguments or "") if t.function else ""
        finish = ch.choices[0].finish_reason or finish
    return {"content": content or None, "reasoning": reasoning or None, "finish": finish,
            "calls": [(c["id"], c["name"], json.loads(c["args"])) for _, c in sorted(calls.items())]}


def tool_loop(client, stream: bool) -> None:
    """tools → a parsed call with the request's argument → the tool's result → an answer that reads it."""
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    turn = _ask(client, messages, stream, tools=[WEATHER, ADD])
    assert turn["finish"] == "tool_calls" and turn["content"] is None
    [(call_id, name, args)] = turn["calls"]
    assert (name, args) == ("get_weather", {"city": "Paris"}) and call_id.startswith("call_")
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]},
                 {"role": "tool", "tool_call_id": call_id,
                  "content": json.dumps({"city": "Paris", "temperature": 21, "sky": "clear"})}]
    answer = _ask(client, messages, stream, tools=[WEATHER, ADD])
    assert answer["calls"] == [] and answer["finish"] == "stop"
    assert answer["content"] == "It is 21 °C and clear in Paris."


@pytest.mark.parametrize("backend", ["llamacpp", "openvino", "transformers"])
def test_a_full_tool_loop(artifacts, backend):
    with serving(artifacts[backend]) as base:
        client = _client(base)
        for stream in (False, True):
            tool_loop(client, stream)


def test_tool_choice_required_named_and_none(gguf_server):
    client = _client(gguf_server)
    sum_request = [{"role": "user", "content": "What is 12 + 30?"}]
    for stream in (False, True):
        named = _ask(client, sum_request, stream, tools=[WEATHER, ADD],
                     tool_choice={"type": "function", "function": {"name": "add"}})
        assert [(n, a) for _, n, a in named["calls"]] == [("add", {"a": 12, "b": 30})]
        required = _ask(client, [{"role": "user", "content": "Tell me the weather for Oslo."}], stream,
                        tools=[WEATHER], tool_choice="required")
        assert [(n, a) for _, n, a in required["calls"]] == [("get_weather", {"city": "Oslo"})]
        none = _ask(client, sum_request, stream, tools=[WEATHER, ADD], tool_choice="none")
        assert none["calls"] == [] and none["content"] and none["finish"] in ("stop", "length")


def test_a_forced_tool_yields_a_call_at_any_seed(gguf_server):
    """A named function, and "required" with one tool, constrain the arguments to the tool's schema: sampled at
    temperature 1 with any seed, every answer is a call of that tool with schema-valid arguments — also where the
    model would rather answer in text (a code prompt: with only the name forced, 2 of these 8 were calls). The
    city is bounded (maxLength), so a sampled string ends within the token budget."""
    client = _client(gguf_server)
    weather = {"type": "function", "function": {**WEATHER["function"], "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 24}}, "required": ["city"]}}}
    for seed in range(4):
        for choice in ({"type": "function", "function": {"name": "get_weather"}}, "required"):
            turn = _ask(client, USER, seed % 2 == 1, tools=[weather] if choice == "required" else [weather, ADD],
                        tool_choice=choice, temperature=1.0, seed=seed, max_tokens=200)
            assert [n for _, n, _ in turn["calls"]] == ["get_weather"], (seed, choice, turn)
            args = turn["calls"][0][2]
            assert set(args) <= {"city"} and isinstance(args["city"], str) and turn["finish"] == "tool_calls"


def test_logprobs_and_echo_are_the_models_own_as_transformers_computes_them(gguf_server):
    """What lm-evaluation-harness sends (token ids, echo, logprobs, max_tokens 1, temperature 0): the prompt's
    token logprobs (the first null) then the answer's, each transformers' log-softmax on the source, with the
    likeliest alternatives best first; max_tokens 0 echoes the prompt alone; chat logprobs cover the answer."""
    import numpy as np
    import torch
    from conftest import logits as transformers_logits
    from tokenizers import Tokenizer

    from glmkit.sources.source import transformers_dir

    source = transformers_dir("glm4-tiny")
    tok = Tokenizer.from_file(str(source / "tokenizer.json"))
    ids = tok.encode("def read_config(path):\n    with open(path) as f:", add_special_tokens=False).ids
    ref = torch.log_softmax(transformers_logits(str(source), ids).double(), -1).numpy()

    def post(path: str, body: dict):
        return httpx.post(f"{gguf_server}/v1/{path}", json={"model": "tiny", **body}, timeout=120)

    r = post("completions", {"prompt": ids, "echo": True, "logprobs": 3, "max_tokens": 1, "temperature": 0}).json()
    choice = r["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(ids) + 1 and lp["token_logprobs"][0] is None
    np.testing.assert_allclose(lp["token_logprobs"][1:-1], [ref[i - 1, ids[i]] for i in range(1, len(ids))],
                               atol=2e-3)
    best = int(ref[-1].argmax())  # greedy: the answer's token is the likeliest, with its logprob
    assert lp["tokens"][-1] == tok.decode([best]) and lp["token_logprobs"][-1] == pytest.approx(ref[-1, best], abs=2e-3)
    for top in lp["top_logprobs"][1:]:
        values = list(top.values())
        assert len(values) <= 3 and values == sorted(values, reverse=True)
    assert max(lp["top_logprobs"][-1].values()) == lp["token_logprobs"][-1]
    assert choice["text"] == tok.decode(ids) + lp["tokens"][-1]
    assert lp["text_offset"][:2] == [0, len(lp["tokens"][0])]

    alone = post("completions", {"prompt": ids, "echo": True, "logprobs": 0, "max_tokens": 0}).json()["choices"][0]
    assert alone["logprobs"]["token_logprobs"] == lp["token_logprobs"][:-1] and alone["text"] == tok.decode(ids)
    assert all(t == {} for t in alone["logprobs"]["top_logprobs"][1:])

    chat = post("chat/completions", {"messages": USER, "logprobs": True, "top_logprobs": 2, "max_tokens": 6})
    content = chat.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == chat.json()["usage"]["completion_tokens"]
    assert all(c["logprob"] <= 0 and len(c["top_logprobs"]) == 2 for c in content)
    assert "".join(c["token"] for c in content).strip() == chat.json()["choices"][0]["message"]["content"].strip()
    for body, words in (({"prompt": "x", "logprobs": 6}, "0 to 5"), ({"prompt": "x", "max_tokens": 0}, "echo: true")):
        bad = post("completions", body)
        assert bad.status_code == 400 and words in bad.json()["error"]["message"], bad.text


def test_streamed_logprobs_and_echo_equal_the_whole_answers(gguf_server):
    """Streamed, a choice's logprobs come in a chunk after its text and before its finish_reason; joined as the
    openai client joins them they equal the non-streamed answer's, and a streamed echo starts with the prompt."""
    client = _client(gguf_server)
    kw = dict(model="tiny", messages=USER, logprobs=True, top_logprobs=3, max_tokens=8, temperature=0)
    whole = client.chat.completions.create(**kw)
    text, content, finish_after = "", [], None
    for ch in client.chat.completions.create(**kw, stream=True):
        for c in ch.choices:
            text += c.delta.content or ""
            if c.logprobs and c.logprobs.content:
                assert finish_after is None  # the logprobs come before the finish_reason
                content += c.logprobs.content
            finish_after = finish_after or c.finish_reason
    assert text == whole.choices[0].message.content and finish_after == whole.choices[0].finish_reason
    assert [c.model_dump() for c in content] == [c.model_dump() for c in whole.choices[0].logprobs.content]

    ckw = dict(model="tiny", prompt="def read_config(path):", echo=True, logprobs=2, max_tokens=4, temperature=0)
    plain = client.completions.create(**ckw).choices[0]
    chunks = [c for ch in client.completions.create(**ckw, stream=True) for c in ch.choices]
    assert "".join(c.text for c in chunks) == plain.text and chunks[0].text.startswith("def read_config(path):")
    scored = [c.logprobs for c in chunks if c.logprobs]
    assert len(scored) == 1 and scored[0].model_dump() == plain.logprobs.model_dump()


def test_n_choices_each_draw_with_their_own_seed_streamed_or_not(artifacts, gguf_server):
    """n choices: choice i is the request's answer with seed + i (the runtime alone says what that is); the
    prompt is counted once and every choice's tokens; streamed chunks carry each choice's index."""
    client = _client(gguf_server)
    kw = dict(model="tiny", messages=USER, max_tokens=12, temperature=1.0, seed=7, n=3)
    with load(artifacts["llamacpp"], n_ctx=1024) as rt:
        alone = [rt.generate(USER, GenerationConfig(max_new_tokens=12, temperature=1.0, seed=7 + i)) for i in range(3)]
    r = client.chat.completions.create(**kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.message.content for c in r.choices] == [a.text for a in alone]
    assert len({c.message.content for c in r.choices}) > 1  # the seeds differ, so do the answers
    assert r.usage.prompt_tokens == alone[0].prompt_tokens
    assert r.usage.completion_tokens == sum(len(a.token_ids) for a in alone)
    texts, finished = ["", "", ""], set()
    for ch in client.chat.completions.create(**kw, stream=True):
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished.add(c.index)
    assert texts == [a.text for a in alone] and finished == {0, 1, 2}
    two = client.completions.create(model="tiny", prompt="import os\n", max_tokens=8, temperature=0, n=2)
    assert two.choices[0].text == two.choices[1].text and two.usage.completion_tokens == 16


CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The current time"}}  # no parameters


@pytest.mark.parametrize("backend", ["llamacpp", "transformers"])
def test_a_tool_declared_without_parameters_is_called_with_none(artifacts, gguf_server, backend):
    """OpenAI: a function without `parameters` takes no arguments. llama.cpp's grammar admits only {} (sampled
    here at temperature 1); the reference has no grammar, so its turn starts with the name and the arguments it
    writes (greedy: the weather's) are not passed on."""
    import contextlib

    with (contextlib.nullcontext(gguf_server) if backend == "llamacpp" else serving(artifacts[backend])) as base:
        client = _client(base)
        for seed, stream in enumerate((False, True)):
            turn = _ask(client, [{"role": "user", "content": "What is the weather in Paris?"}], stream,
                        tools=[CLOCK, WEATHER], tool_choice={"type": "function", "function": {"name": "get_time"}},
                        temperature=1.0 if backend == "llamacpp" else 0.0, seed=seed, max_tokens=48)
            assert [(n, a) for _, n, a in turn["calls"]] == [("get_time", {})], turn


def test_n_null_is_one_and_streams_ask_proxies_not_to_buffer(gguf_server):
    body = {"model": "tiny", "messages": USER, "max_tokens": 4, "n": None}
    r = httpx.post(f"{gguf_server}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200 and len(r.json()["choices"]) == 1
    with httpx.stream("POST", f"{gguf_server}/v1/chat/completions", json={**body, "stream": True}, timeout=120) as s:
        assert s.status_code == 200 and s.headers["x-accel-buffering"] == "no"
        assert s.read().decode().rstrip().endswith("data: [DONE]")


REPORT = {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 40}},
          "required": ["summary"], "additionalProperties": False}


@pytest.mark.parametrize("backend", ["llamacpp", "openvino"])
def test_response_format_with_tools_still_calls_tools_then_answers_in_the_schema(artifacts, backend):
    """What the Agents SDK sends (output_type + a function tool): response_format no longer switches tools off —
    the model calls the tool, and after the result its answer is JSON of the schema."""
    fmt = {"type": "json_schema", "json_schema": {"name": "report", "schema": REPORT}}
    with serving(artifacts[backend]) as base:
        client = _client(base)
        for stream in (False, True):
            messages = [{"role": "user", "content": "Tell me the weather for Oslo."}]
            turn = _ask(client, messages, stream, tools=[WEATHER], response_format=fmt)
            assert [n for _, n, _ in turn["calls"]] == ["get_weather"] and turn["finish"] == "tool_calls", turn
            (cid, name, args), = turn["calls"]
            messages += [{"role": "assistant", "content": None, "tool_calls": [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]},
                {"role": "tool", "tool_call_id": cid, "content": "Sunny, 21 °C"}]
            answer = _ask(client, messages, stream, tools=[WEATHER], response_format=fmt, max_tokens=120)
            assert answer["calls"] == [] and answer["finish"] == "stop", answer
            report = json.loads(answer["content"])
            assert set(report) == {"summary"} and len(report["summary"]) <= 40


PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.mark.parametrize("backend", ["llamacpp", "openvino"])
def test_response_format_and_required_among_several_tools_are_enforced_by_the_engine(artifacts, backend):
    """glm4-tiny answers a code request with Python; with response_format the engine's constrained decoding (a
    llama.cpp grammar, openvino-genai's structured output) makes the answer JSON of the schema, and with
    tool_choice 'required' among several tools, one call of a declared tool with arguments of its schema."""
    with serving(artifacts[backend]) as base:
        client = _client(base)
        for stream in (False, True):
            free = _ask(client, USER, stream, max_tokens=48)
            with pytest.raises(json.JSONDecodeError):
                json.loads(free["content"])
            person = _ask(client, USER, stream, max_tokens=96,
                          response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
            value = json.loads(person["content"])
            assert set(value) == {"name", "age"} and isinstance(value["name"], str) and type(value["age"]) is int
            assert person["finish"] == "stop"
            # any object: glm4-tiny's keys run on (it knows Python, not JSON); the engine still opens an object
            obj = _ask(client, USER, stream, max_tokens=16, response_format={"type": "json_object"})
            assert free["content"].startswith("def ") and obj["content"].startswith('{"')
            call = _ask(client, USER, stream, tools=[WEATHER, ADD], tool_choice="required")
            assert call["finish"] == "tool_calls" and len(call["calls"]) == 1
            _, name, args = call["calls"][0]
            params = {"get_weather": WEATHER, "add": ADD}[name]["function"]["parameters"]
            assert set(params["required"]) <= set(args) <= set(params["properties"])


def test_frequency_and_presence_penalties_change_the_answer(gguf_server):
    """OpenAI's penalties, over the answer only (runtimes test the same figures on every backend)."""
    client = _client(gguf_server)
    repeat = [{"role": "user", "content": "import sys\nimport sys"}]
    plain = _ask(client, repeat, False, max_tokens=24)["content"]
    penalised = _ask(client, repeat, False, max_tokens=24, frequency_penalty=1.0, presence_penalty=0.5)["content"]
    assert plain.count("import sys") > penalised.count("import sys") >= 1


def test_a_code_request_with_tools_present_is_a_plain_answer(gguf_server):
    turn = _ask(_client(gguf_server), USER, False, tools=[WEATHER, ADD], max_tokens=300)
    assert turn["calls"] == [] and turn["content"].startswith("def ") and turn["finish"] == "stop"


@pytest.fixture(scope="module")
def z1_gguf(tmp_path_factory, glmkit_cache):
    from glmkit.convert.gguf import to_gguf

    return str(to_gguf("glm4-tiny-z1", tmp_path_factory.mktemp("z1") / "glm4-tiny-z1.gguf", outtype="f32",
                       verify=False, quiet=True))


def test_z1_reasoning_comes_apart_from_the_answer_and_stays_out_of_history(z1_gguf):
    question = [{"role": "user", "content": "def read_config(path):"}]
    with serving(z1_gguf) as base:
        client = _client(base)
        whole = _ask(client, question, False, seed=0)
        streamed = _ask(client, question, True, seed=0)
        assert whole["reasoning"] and whole["content"] and "<think>" not in whole["content"] + whole["reasoning"]
        assert "</think>" not in whole["content"] and (streamed["reasoning"], streamed["content"]) == (
            whole["reasoning"], whole["content"])
        follow = {"role": "user", "content": "class Config:"}
        usage = [client.chat.completions.create(model="tiny", max_tokens=1, messages=question + [
            {"role": "assistant", "content": whole["content"], **extra}, follow]).usage.prompt_tokens
                 for extra in ({}, {"reasoning_content": whole["reasoning"]})]
        assert usage[0] == usage[1]


def test_the_model_cards_sampling_applies_where_the_request_is_silent():
    from types import SimpleNamespace

    from glmkit.glm4 import families
    from glmkit.serve.plan import sampling
    from glmkit.serve.protocol import ChatRequest

    z1 = SimpleNamespace(chat_format=families.CHAT_FORMATS["z1"], context_length=100)
    body = ChatRequest(model="m", messages=[{"role": "user", "content": "x"}])
    cfg = sampling(body, z1, None, 3)
    assert (cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens) == (0.6, 0.95, 40, 97)
    cfg = sampling(body.model_copy(update={"temperature": 0.0, "top_k": 5}), z1, None, 3)
    assert (cfg.temperature, cfg.top_p, cfg.top_k) == (0.0, 0.95, 5)
    glm4 = SimpleNamespace(chat_format=families.CHAT_FORMATS["glm4"], context_length=100)
    assert sampling(body, glm4, None, 1).temperature == 1.0  # OpenAI's default


def test_schemathesis_finds_no_server_error(artifacts, tmp_path):
    """Property-based requests generated from glm-serve's own OpenAPI schema (valid and invalid bodies, fixed
    seed, NUL bytes allowed in strings): none gets a 5xx. Lone surrogates cannot come from schemathesis (its
    strings are what a codec encodes): tests/test_plan.py fuzzes those, whole and chunked."""
    import subprocess
    import sys
    from pathlib import Path

    with serving(artifacts["llamacpp"], "--n-ctx", "512") as base:
        r = subprocess.run([str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/openapi.json",
                            "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "7",
                            "--generation-deterministic", "--generation-allow-x00", "true", "--request-timeout", "120",
                            "--workers", "1"],
                           capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its cache goes there
    assert r.returncode == 0, r.stdout[-4000:]
