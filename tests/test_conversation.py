"""A runtime that holds a conversation: KV reuse across turns, streamed text that joins to the result, limits that
answer, and plain prompts that start like GLM-4's own tokenizer's."""

import pytest

from glmkit.convert import GlmkitError
from glmkit.glm4 import families
from glmkit.glm4.parser import OutputParser, OutputSpec, Reasoning, Text
from glmkit.runtimes import GenerationConfig, GenerationResult, TextDelta, load

TURNS = ["def add(a, b):", "class Stack:", "def read_config(path):"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, glmkit_cache):
    from glmkit.convert import to_gguf, to_openvino

    root = tmp_path_factory.mktemp("conv")
    return {"ov": to_openvino("glm4-tiny", root / "ov", weight_format="fp16", quiet=True),
            "gguf": to_gguf("glm4-tiny", root / "m.gguf", outtype="f32", quiet=True)}


def _open(kind, artifacts, **options):
    if kind == "transformers":
        return load("glm4-tiny", **options)
    if kind == "openvino":
        return load(str(artifacts["ov"]), INFERENCE_PRECISION_HINT="f32", **options)
    return load(str(artifacts["gguf"]), kv_cache="f32", **options)


BACKENDS = ("transformers", "openvino", "llamacpp")


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_second_turn_prefills_only_the_new_tokens_with_the_cold_answer(kind, artifacts):
    cfg = GenerationConfig(max_new_tokens=24, ignore_eos=True)
    warm, cold = _open(kind, artifacts), _open(kind, artifacts, prefix_cache=False)
    try:
        chats = {"warm": warm.chat(system="You write Python.", config=cfg),
                 "cold": cold.chat(system="You write Python.", config=cfg)}
        results = {k: [c.send(t) for t in TURNS] for k, c in chats.items()}
        for w, c in zip(results["warm"], results["cold"]):
            assert w.token_ids == c.token_ids and w.text == c.text
            assert c.cached_tokens == 0
        first, later = results["warm"][0], results["warm"][1:]
        assert first.cached_tokens == 0
        for prev, r in zip(results["warm"], later):
            # the previous prompt and answer are held; everything from the new user turn on is prefilled
            assert prev.prompt_tokens < r.cached_tokens < r.prompt_tokens
            new = r.prompt_tokens - r.cached_tokens
            assert new < 20, new
            if kind == "llamacpp":  # llama.cpp's own perf counter of prompt tokens evaluated
                assert r.engine["prompt_tokens_evaluated"] == new
            if kind == "transformers":  # the KV cache's own length when the new tokens went in
                assert r.engine["cache_tokens_before"] == r.cached_tokens
    finally:
        warm.close()
        cold.close()


def test_parser_holds_back_stop_strings_split_across_tokens():
    a = OutputParser(OutputSpec(stop=("END", "\n\n\n")))
    pieces = ["ab", "c E", "N", "x\n", "\n", "y E", "ND tail"]
    out = [d.text for p in pieces for d in a.feed(p)]
    assert "".join(out) == a.content == "abc ENx\n\ny " and a.stopped
    assert all("E" not in o or "EN" in o for o in out[:2])  # "E" waited until "N x" showed it was no stop


def test_parser_splits_z1_reasoning_and_answer():
    a = OutputParser(OutputSpec(thinks=True))
    deltas = [d for p in ["\nLet", " me think. ", "</th", "ink>", "\n\nThe", " answer. ", "\n"] for d in a.feed(p)]
    deltas += a.close()
    assert "".join(d.text for d in deltas if isinstance(d, Reasoning)) == a.reasoning == "Let me think."
    assert "".join(d.text for d in deltas if isinstance(d, Text)) == a.content == "The answer."


@pytest.mark.parametrize("kind", BACKENDS)
def test_streamed_deltas_join_to_the_result_with_stop_strings(kind, artifacts):
    rt = _open(kind, artifacts)
    try:
        msgs = [{"role": "user", "content": "def read_config(path):"}]
        free = rt.generate(msgs, GenerationConfig(max_new_tokens=40, ignore_eos=True)).text
        for stop in ((), (free[20:23],), (free[5:6], "zzz")):
            events = list(rt.stream(msgs, GenerationConfig(max_new_tokens=40, ignore_eos=True, stop=stop)))
            result = events[-1]
            assert isinstance(result, GenerationResult) and all(isinstance(e, TextDelta) for e in events[:-1])
            assert "".join(e.text for e in events[:-1]) == result.text
            if stop:
                assert result.finish_reason == "stop_string" and result.text == free[: free.index(stop[0])]
    finally:
        rt.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_same_greedy_request_cold_and_cached_gives_the_same_answer(kind, artifacts):
    """The cached run decodes only the last prompt token; the cold run decodes that token alone too, so its
    logits, and the greedy answer, do not depend on whether the prompt was cached."""
    rt = _open(kind, artifacts)
    try:
        msgs = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "class Stack:"}]
        cfg = GenerationConfig(max_new_tokens=32, ignore_eos=True)
        rt.reset_cache()
        cold = rt.generate(msgs, cfg)
        warm = rt.generate(msgs, cfg)
        assert cold.cached_tokens == 0 and warm.cached_tokens == warm.prompt_tokens - 1
        assert warm.token_ids == cold.token_ids
    finally:
        rt.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_sampling_without_a_seed_draws_afresh_each_call(kind, artifacts):
    """No seed: every engine draws a new one per call (openvino-genai's own seed is otherwise fixed, so five
    sampled answers were one); with a seed, the same answer."""
    rt = _open(kind, artifacts)
    try:
        msgs = [{"role": "user", "content": "def read_config(path):"}]
        free = GenerationConfig(max_new_tokens=24, temperature=1.0, ignore_eos=True)
        assert len({tuple(rt.generate(msgs, free).token_ids) for _ in range(5)}) > 1
        seeded = GenerationConfig(max_new_tokens=24, temperature=1.0, ignore_eos=True, seed=7)
        assert len({tuple(rt.generate(msgs, seeded).token_ids) for _ in range(3)}) == 1
    finally:
        rt.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_generation_to_the_context_limit_ends_with_length(kind, artifacts):
    rt = _open(kind, artifacts, n_ctx=64)
    try:
        assert rt.context_length == 64
        prompt = "def read_config(path):\n    " * 4
        n = len(rt.prompt_ids(prompt))
        r = rt.generate(prompt, GenerationConfig(max_new_tokens=500, ignore_eos=True))
        assert r.finish_reason == "length" and r.clamped and r.max_new_tokens == 64 - n == len(r.token_ids)
        with pytest.raises(GlmkitError, match=r"the prompt has \d+ tokens but the context holds 64"):
            rt.generate("word " * 100)
    finally:
        rt.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_plain_string_is_a_glm4_prompt(kind, artifacts):
    rt = _open(kind, artifacts)
    try:
        head = [rt.tokenizer.special_ids["[gMASK]"], rt.tokenizer.special_ids["<sop>"]]
        assert rt.prompt_ids("def fib(n):")[:2] == head
        assert rt.prompt_ids("def fib(n):", raw=True)[:2] != head
        assert rt.prompt_ids(families.PROMPT_PREFIX + "x") == rt.prompt_ids("x")  # never doubled
    finally:
        rt.close()


def test_glm_chat_takes_engine_flags_and_refuses_the_wrong_backend():
    import subprocess
    import sys

    def glm_chat(*args):
        return subprocess.run([sys.executable, "-m", "glmkit.runtimes", "glm4-tiny", "--prompt", "def add(a, b):",
                               "--max-new-tokens", "8", *args], capture_output=True, text=True, timeout=300)

    ok = glm_chat("--n-ctx", "256", "--threads", "1", "--dtype", "bfloat16", "--top-k", "5", "--top-p", "0.9",
                  "--temperature", "0.7", "--seed", "1", "--no-prefix-cache")
    assert ok.returncode == 0 and ok.stdout.strip(), ok.stderr
    bad = glm_chat("--kv-cache", "q8_0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "kv_cache applies to the openvino and llamacpp backend(s), not transformers" in bad.stderr
