"""Speculative decoding changes speed, never output: on both engines, with prompt lookup and with a draft model,
the answer is token for token the plain run's (greedy, and with llama.cpp's seeded sampler the same draws), across
stop strings and tool calls, and rejected proposals leave nothing behind in the KV cache."""

import json
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import OpenAI
from servers import serving

from glmkit.benchmarks.grounded import held_out_tasks
from glmkit.convert import GlmkitError
from glmkit.runtimes import GenerationConfig, load
from glmkit.runtimes.speculative import NgramLookup

TASKS = held_out_tasks(2)  # 2 of each edit on held-out functions, and 2 free-text requests
GREEDY = GenerationConfig(max_new_tokens=64)
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                             "parameters": {"type": "object",
                                                            "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}]


@pytest.fixture(scope="module")
def drafts(tiny_artifacts, tmp_path_factory):
    """glm4-tiny-draft (same tokenizer, one layer) in each engine's format, and a draft whose vocabulary differs
    in two tokens (glm4-tiny's, with 'a' and 'b' swapped)."""
    from glmkit.convert.gguf import to_gguf
    from glmkit.convert.openvino import to_openvino
    from glmkit.sources import source

    root = tmp_path_factory.mktemp("drafts")
    other = root / "other-hf"
    shutil.copytree(source.resolve("glm4-tiny-draft", quiet=True).path, other)
    tok = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (other / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    return {"llamacpp": str(to_gguf("glm4-tiny-draft", root / "draft.gguf", outtype="f32", verify=False,
                                    quiet=True)),
            "openvino": str(to_openvino("glm4-tiny-draft", root / "draft-ov", weight_format="fp16", verify=False,
                                        quiet=True)),
            "other-llamacpp": str(to_gguf(str(other), root / "other.gguf", outtype="f32", verify=False,
                                          quiet=True)),
            "other-openvino": str(to_openvino(str(other), root / "other-ov", weight_format="fp16", verify=False,
                                              quiet=True))}


def _open(tiny_artifacts, drafts, kind, method, **options):
    """The model with speculation; method "self-draft": glm4-tiny drafting for itself, so every proposal is kept."""
    spec = ({"speculative": "prompt-lookup"} if method == "prompt-lookup" else
            {"draft": tiny_artifacts[kind] if method == "self-draft" else drafts[kind]})
    exact = {"INFERENCE_PRECISION_HINT": "f32"} if kind == "openvino" else {"kv_cache": "f32"}
    return load(tiny_artifacts[kind], n_ctx=2048, **exact, **options, **spec)


def _plain(tiny_artifacts, kind, **options):
    exact = {"INFERENCE_PRECISION_HINT": "f32"} if kind == "openvino" else {"kv_cache": "f32"}
    return load(tiny_artifacts[kind], n_ctx=2048, **exact, **options)


ENGINES = [("llamacpp", "prompt-lookup"), ("llamacpp", "draft"), ("openvino", "prompt-lookup"),
           ("openvino", "draft")]


@pytest.mark.parametrize("kind,method", ENGINES)
def test_greedy_answers_equal_plain_decoding(tiny_artifacts, drafts, kind, method):
    """Edits that copy their input and free text: the same token ids, and proposals were both kept and refused
    (so the accepting and the rolling-back paths both ran)."""
    with _plain(tiny_artifacts, kind) as plain:
        expected = [plain.generate(t["messages"], GREEDY).token_ids for t in TASKS]
    with _open(tiny_artifacts, drafts, kind, method) as rt:
        results = [rt.generate(t["messages"], GREEDY) for t in TASKS]
    assert [r.token_ids for r in results] == expected
    accepted = sum(r.engine["accepted"] for r in results)
    assert accepted > len(TASKS)
    if kind == "llamacpp":  # openvino-genai does not say how many it proposed
        assert accepted < sum(r.engine["proposed"] for r in results)


@pytest.mark.parametrize("kind,method", [(k, "self-draft" if m == "draft" else m) for k, m in ENGINES])
def test_a_stop_string_and_a_tool_call_inside_a_proposal(tiny_artifacts, drafts, kind, method):
    repeat = next(t for t in TASKS if t["kind"] == "repeat")
    stop = repeat["expected"].splitlines()[1][4:12]  # in the answer's second line: inside a run of kept proposals
    config = GenerationConfig(max_new_tokens=128, stop=(stop,))
    ask = [{"role": "user", "content": "What is the weather in Oslo?"}]
    with _plain(tiny_artifacts, kind) as plain:
        want = plain.generate(repeat["messages"], config)
        want_call = plain.generate(ask, GREEDY, tools=WEATHER)
    with _open(tiny_artifacts, drafts, kind, method) as rt:
        got = rt.generate(repeat["messages"], config)
        events = list(rt.stream(ask, GREEDY, tools=WEATHER))
    assert want.finish_reason == "stop_string" and stop in repeat["messages"][0]["content"]
    assert (got.text, got.token_ids, got.finish_reason) == (want.text, want.token_ids, want.finish_reason)
    assert got.engine["accepted"] > 0
    call = events[-1]
    assert [(c.name, c.arguments) for c in call.tool_calls] == [(c.name, c.arguments) for c in want_call.tool_calls]
    assert json.loads(call.tool_calls[0].arguments) == {"city": "Oslo"} and call.engine["accepted"] > 0


@pytest.mark.parametrize("kind", ["llamacpp", "openvino"])
def test_rejected_proposals_leave_no_trace_in_the_kv(tiny_artifacts, drafts, kind):
    """A chat's next turn after a speculative turn with refused proposals: the same cached prefix and the same
    answer as after a plain turn."""
    first = next(t for t in TASKS if t["kind"] == "rename")["messages"]
    runs = []
    for rt in (_plain(tiny_artifacts, kind), _open(tiny_artifacts, drafts, kind, "prompt-lookup")):
        with rt:
            one = rt.generate(first, GREEDY)
            turn = first + [{"role": "assistant", "content": one.text}, {"role": "user", "content": "Repeat this "
                                                                         "exactly:\n" + one.text[:200]}]
            runs.append((one, rt.generate(turn, GREEDY)))
    (_, plain2), (spec1, spec2) = runs
    if kind == "llamacpp":
        assert spec1.engine["proposed"] > spec1.engine["accepted"]
    assert spec2.cached_tokens == plain2.cached_tokens and spec2.cached_tokens > len(spec1.token_ids)
    assert spec2.token_ids == plain2.token_ids


@pytest.mark.parametrize("kind", ["llamacpp", "openvino"])
def test_seeded_sampling_draws_what_plain_decoding_draws(tiny_artifacts, drafts, kind):
    """Each emitted token is the model's own draw from its own distribution, in order, so a seeded run repeats the
    plain run's tokens (speculative sampling's rule, for proposals that are not drawn)."""
    task = next(t for t in TASKS if t["kind"] == "repeat")["messages"]
    configs = [GenerationConfig(max_new_tokens=48, temperature=0.8, top_p=0.95, seed=s) for s in (1, 2, 3)]
    with _plain(tiny_artifacts, kind) as plain:
        want = [plain.generate(task, c).token_ids for c in configs]
    with _open(tiny_artifacts, drafts, kind, "prompt-lookup") as rt:
        got = [rt.generate(task, c) for c in configs]
    assert [g.token_ids for g in got] == want and len(set(map(tuple, want))) > 1
    assert sum(g.engine["accepted"] for g in got) > 0


@pytest.mark.parametrize("kind,method", ENGINES)
def test_batched_generations_speculate_each_alone(tiny_artifacts, drafts, kind, method):
    """load(parallel=2): two streams consumed in turn share the engine's steps; each is its plain answer."""
    tasks = [t["messages"] for t in TASKS if t["kind"] in ("rename", "repeat")][:2]
    with _plain(tiny_artifacts, kind) as plain:
        want = [plain.generate(t, GREEDY).token_ids for t in tasks]
    with _open(tiny_artifacts, drafts, kind, method, parallel=2) as rt:
        streams = [rt.stream(t, GREEDY) for t in tasks]
        results = [None, None]
        while any(r is None for r in results):
            for i, s in enumerate(streams):
                if results[i] is None and hasattr(event := next(s), "token_ids"):
                    results[i] = event
    assert [r.token_ids for r in results] == want
    assert [r.engine["batched_max"] for r in results] == [2, 2] and sum(r.engine["accepted"] for r in results) > 0


@pytest.mark.parametrize("kind", ["llamacpp", "openvino"])
def test_a_draft_with_another_tokenizer_is_refused(tiny_artifacts, drafts, kind):
    with pytest.raises(GlmkitError, match="another tokenizer.*token \\d+ is"):
        load(tiny_artifacts[kind], draft=drafts[f"other-{kind}"])
    wrong = drafts["openvino" if kind == "llamacpp" else "llamacpp"]
    with pytest.raises(GlmkitError, match="takes an? .* draft"):
        load(tiny_artifacts[kind], draft=wrong)


@pytest.mark.parametrize("options,message", [
    ({"speculative": "lookahead"}, "choose prompt-lookup or draft"),
    ({"speculative": "prompt-lookup", "draft_tokens": 0}, "1 to 64"),
    ({"ngram_size": 2}, "add --prompt-lookup"),
    ({"speculative": "draft"}, "needs a draft model"),
])
def test_impossible_speculation_options_are_one_clear_error(tiny_artifacts, options, message):
    with pytest.raises(GlmkitError, match=message):
        load(tiny_artifacts["llamacpp"], **options)


def test_the_transformers_reference_refuses_speculation():
    with pytest.raises(GlmkitError, match="applies to the openvino and llamacpp"):
        load("glm4-tiny", speculative="prompt-lookup")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=40), st.integers(1, 4), st.integers(1, 6))
def test_prompt_lookup_proposes_what_followed_the_earliest_match(tokens, ngram, k):
    """Against a direct search: the longest suffix (up to ngram) seen earlier, its earliest occurrence's next k."""
    want = []
    for n in range(min(ngram, len(tokens) - 1), 0, -1):
        ends = [e for e in range(n, len(tokens)) if tokens[e - n:e] == tokens[-n:]]
        if ends:
            want = tokens[ends[0]:ends[0] + k]
            break
    lookup = NgramLookup(ngram, tokens[:len(tokens) // 2])
    lookup.propose(k)  # an early proposal indexes the first half: growing the text afterwards must not matter
    lookup.extend(tokens[len(tokens) // 2:])
    assert lookup.propose(k) == want


def test_glm_serve_reports_kept_proposals_and_answers_as_plain(tiny_artifacts):
    task = next(t for t in TASKS if t["kind"] == "repeat")["messages"]
    with _plain(tiny_artifacts, "llamacpp") as plain:
        want = plain.generate(task, GREEDY)
    with serving(tiny_artifacts["llamacpp"], "--prompt-lookup", "--kv-cache", "f32", "--n-ctx", "2048") as base:
        client = OpenAI(base_url=base + "/v1", api_key="none")
        r = client.chat.completions.create(model="tiny", messages=task, max_tokens=64, temperature=0)
        chunks = list(client.chat.completions.create(model="tiny", messages=task, max_tokens=64, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
    details = r.usage.completion_tokens_details
    assert r.choices[0].message.content == want.text
    assert details.accepted_prediction_tokens > 0 and details.rejected_prediction_tokens >= 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want.text
    assert chunks[-1].usage.completion_tokens_details.accepted_prediction_tokens == details.accepted_prediction_tokens


def test_glm_chat_prompt_lookup_answers_as_without(tiny_artifacts):
    prompt = next(t for t in TASKS if t["kind"] == "rename")["messages"][0]["content"]
    cmd = [sys.executable, "-m", "glmkit.runtimes", tiny_artifacts["llamacpp"], "--prompt", prompt,
           "--max-new-tokens", "64", "--kv-cache", "f32"]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    fast = subprocess.run(cmd + ["--prompt-lookup", "--draft-tokens", "6"], capture_output=True, text=True, timeout=300)
    assert plain.returncode == fast.returncode == 0, fast.stderr
    assert fast.stdout == plain.stdout and len(plain.stdout.strip()) > 20


def test_glm_bench_speculative_reports_speed_up_beside_plain(tiny_artifacts, tmp_path):
    from glmkit.benchmarks.cli import run

    out = tmp_path / "spec.json"
    assert run(["run", tiny_artifacts["llamacpp"], "--speculative", "prompt-lookup", "--tasks", "1", "--gen", "48",
                "-q", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["kinds"]) == {"rename", "quotes", "repeat", "extract", "free"}
    assert all(r["identical"] == r["requests"] for r in data["kinds"].values())
    assert data["grounded"]["accepted"] > 0 and data["grounded"]["tokens_per_pass"] > 1
    assert "| all input-grounded |" in out.with_suffix(".md").read_text()
