"""One runtime interface: the same messages give the same prompt ids and greedy tokens on every backend."""

import pytest

from glmkit.convert import GlmkitError
from glmkit.glm4 import families
from glmkit.glm4.parser import OutputSpec, parse_text
from glmkit.runtimes import GenerationConfig, Runtime, load
from glmkit.runtimes.tokenizer import from_hf
from glmkit.sources import embedded

MESSAGES = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "def add(a, b):"},
            {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
            {"role": "user", "content": "class Stack:"}]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, glmkit_cache):
    """glm4-tiny (fp16 weights) as an fp16 IR and an f32 GGUF: both hold exactly the source's weights."""
    from glmkit.convert.gguf import to_gguf
    from glmkit.convert.openvino import to_openvino

    root = tmp_path_factory.mktemp("rt")
    return {"ov": to_openvino("glm4-tiny", root / "ov", weight_format="fp16", quiet=True),
            "gguf": to_gguf("glm4-tiny", root / "m.gguf", outtype="f32", quiet=True)}


@pytest.fixture(scope="module")
def runtimes(artifacts):
    rts = {"transformers": load("glm4-tiny"),
           "openvino": load(str(artifacts["ov"]), INFERENCE_PRECISION_HINT="f32"),
           "llamacpp": load(str(artifacts["gguf"]), kv_cache="f32", n_ctx=1024)}
    yield rts
    for rt in rts.values():
        rt.close()


def test_backends_are_picked_from_the_artifact(runtimes):
    assert {k: rt.backend for k, rt in runtimes.items()} == {k: k for k in runtimes}


def test_same_prompt_ids_on_every_backend(runtimes):
    ids = {k: rt.prompt_ids(MESSAGES) for k, rt in runtimes.items()}
    assert ids["transformers"] == ids["openvino"] == ids["llamacpp"]
    tiny = embedded.GLM4_TINY_REGULAR
    assert ids["transformers"][:3] == [tiny + 2, tiny + 4, tiny + 6]  # [gMASK] <sop> <|system|>


def test_same_greedy_tokens_on_every_backend(runtimes):
    cfg = GenerationConfig(max_new_tokens=40, ignore_eos=True)
    out = {k: rt.generate(MESSAGES, cfg) for k, rt in runtimes.items()}
    assert out["transformers"].token_ids == out["openvino"].token_ids == out["llamacpp"].token_ids
    assert all(len(r.token_ids) == 40 and r.finish_reason == "length" for r in out.values())
    for r in out.values():
        assert r.prompt_tokens > 20 and r.ttft_ms > 0 and r.decode_tps > 0 and r.peak_rss_mb > 50


def test_stop_tokens_end_the_answer(runtimes):
    """glm4-tiny learned to close its turn with <|user|>: every backend stops there, and it is not in the text."""
    msgs = [{"role": "user", "content": "def read_config(path):"}]
    for rt in runtimes.values():
        r = rt.generate(msgs, GenerationConfig(max_new_tokens=300))
        assert r.finish_reason == "stop", (rt.backend, r.text)
        assert not set(r.token_ids) & rt.stop_ids and "<|user|>" not in r.text


def test_stop_strings(runtimes):
    for rt in runtimes.values():
        free = rt.generate(MESSAGES, GenerationConfig(max_new_tokens=32, ignore_eos=True)).text
        stop = free[len(free) // 2: len(free) // 2 + 3]  # a string the model is about to write
        r = rt.generate(MESSAGES, GenerationConfig(max_new_tokens=32, stop=(stop,), ignore_eos=True))
        assert r.finish_reason == "stop_string" and r.text == free[: free.index(stop)], rt.backend


def test_seeded_sampling_repeats(runtimes):
    for rt in runtimes.values():
        cfg = GenerationConfig(max_new_tokens=24, temperature=1.0, top_p=0.95, seed=7, ignore_eos=True)
        a, b = rt.generate(MESSAGES, cfg).token_ids, rt.generate(MESSAGES, cfg).token_ids
        other = rt.generate(MESSAGES, GenerationConfig(**{**cfg.__dict__, "seed": 8})).token_ids
        assert a == b and a != other, rt.backend


def test_history_is_trimmed_from_the_oldest_turn(runtimes):
    rt = runtimes["transformers"]
    session = rt.chat(system="You write Python.", config=GenerationConfig(max_new_tokens=16, ignore_eos=True))
    full = rt.context_length
    rt.context_length = 64  # a tiny context, so four turns cannot all fit
    try:
        for q in ("def add(a, b):", "class Stack:", "def read_config(path):", "import os"):
            session.send(q)
        assert session.trimmed > 0
        assert session.history[-2]["content"] == "import os"
        assert len(rt.prompt_ids(session.messages("x"))) <= rt.context_length - 16
        with pytest.raises(GlmkitError, match="prompt tokens"):
            session.send("word " * 200)
    finally:
        rt.context_length = full


class Scripted(Runtime):
    """A stand-in engine that emits fixed text: tests glmkit's own handling of Z1 reasoning."""

    backend = "scripted"

    def __init__(self, text):
        tok = from_hf(embedded.glm4_tiny_path())
        tok.chat_template = families.Z1_CHAT_TEMPLATE
        super().__init__(tok, families.CHAT_FORMATS["z1"], 2048, "scripted")
        self.ids = tok.encode(text) + [tok.special_ids["<|user|>"]]

    def _token_stream(self, prompt_ids, config, stats):
        yield from self.ids


def test_z1_reasoning_is_split_out_and_kept_out_of_history():
    rt = Scripted("First, recall the formula.</think>\nThe answer is 42.")
    session = rt.chat()
    r = session.send("What is 6 x 7?")
    assert r.text == "The answer is 42." and r.reasoning == "First, recall the formula."
    assert session.history[-1] == {"role": "assistant", "content": "The answer is 42."}
    assert rt.tokenizer.render_chat(session.history + [{"role": "user", "content": "Why?"}]).endswith(
        "<|assistant|>\nThe answer is 42.<|user|>\nWhy?<|assistant|>\n<think>\n")
    assert parse_text("no think block", OutputSpec(thinks=False))[:2] == ("no think block", None)


def test_a_paged_kv_cache_of_another_precision_than_the_compute_is_refused_in_one_line(artifacts):
    """OpenVINO's CPU paged attention (batching, speculation) keeps an f32 or bf16 cache only in the precision
    it computes in; it used to fail at the first request with its own "expect kvcache type bf16"."""
    ir = str(artifacts["ov"])
    with pytest.raises(GlmkitError, match="kv_cache bf16 with batching .* add dtype bfloat16"):
        load(ir, kv_cache="bf16", dtype="float32", parallel=2)
    with pytest.raises(GlmkitError, match="kv_cache f32 with batching .* add dtype float32"):
        load(ir, kv_cache="f32", dtype="bfloat16", speculative="prompt-lookup")
    with load(ir, kv_cache="f32", dtype="float32", parallel=2) as rt:  # matched: runs
        assert len(rt.generate("def add(a, b):", GenerationConfig(max_new_tokens=4, ignore_eos=True)).token_ids) == 4


def test_openvino_speculation_defaults_to_an_f16_cache(artifacts):
    """openvino-genai's speculation verifies several tokens a pass; with the CPU's default cache for it (u8) those
    passes cost what speculation gains (docs/runtimes.md has the measurement), so glmkit asks for f16 unless told
    otherwise; a plain load keeps the engine's default, and a type given is kept."""
    ir = str(artifacts["ov"])
    with load(ir, speculative="prompt-lookup") as fast, load(ir) as plain:
        assert fast.kv_cache == "f16" and plain.kv_cache is None
        assert len(fast.generate(MESSAGES, GenerationConfig(max_new_tokens=4, ignore_eos=True)).token_ids) == 4
    with load(ir, speculative="prompt-lookup", kv_cache="u8") as chosen:
        assert chosen.kv_cache == "u8"


def test_unavailable_device_is_a_clear_error(artifacts):
    with pytest.raises(GlmkitError, match=r"device NPU is not available on this machine \(it has: CPU"):
        load(str(artifacts["ov"]), device="NPU")
    with pytest.raises(GlmkitError, match="needs the openvino backend"):
        load(str(artifacts["gguf"]), device="GPU")


def test_truncated_gguf_is_a_clear_error(artifacts, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(artifacts["gguf"].read_bytes()[:300_000])
    with pytest.raises(GlmkitError, match="truncated or corrupt GGUF"):
        load(str(cut))


def test_openai_penalties_are_the_same_on_every_backend(runtimes):
    """frequency/presence penalties count the answer only: llama.cpp's penalties sampler (fed no prompt),
    openvino-genai's own, and the reference's processor give the same greedy tokens, and not the plain ones."""
    messages = [{"role": "user", "content": "import sys\nimport sys"}]
    plain = runtimes["llamacpp"].generate(messages, GenerationConfig(max_new_tokens=32)).token_ids
    for freq, presence in ((1.0, 0.5), (0.0, 2.0)):
        config = GenerationConfig(max_new_tokens=32, frequency_penalty=freq, presence_penalty=presence)
        got = {k: rt.generate(messages, config).token_ids for k, rt in runtimes.items()}
        assert got["llamacpp"] == got["openvino"] == got["transformers"] != plain


def test_repetition_penalty_changes_greedy_output(runtimes):
    """The penalty reaches every engine: a strong one changes what greedy decoding picks."""
    for rt in runtimes.values():
        plain = rt.generate(MESSAGES, GenerationConfig(max_new_tokens=32, ignore_eos=True)).token_ids
        pen = rt.generate(MESSAGES, GenerationConfig(max_new_tokens=32, repetition_penalty=1.8, ignore_eos=True))
        assert pen.token_ids != plain and len(pen.token_ids) == 32, rt.backend


@pytest.mark.parametrize("kind,sampled", [("gguf", False), ("ov", False), ("ov", True)],
                         ids=["gguf-greedy", "ov-greedy", "ov-seeded"])
def test_parallel_generations_are_batched_and_equal_each_alone(artifacts, kind, sampled):
    """load(parallel=2): two streams consumed in turn from one thread — which a runtime with one KV cache cannot
    do — share the engine's steps, and each is token for token the answer it gets alone; on OpenVINO a seeded
    sample too (each sequence draws from its own generator). llama.cpp's batched logits differ from a lone
    sequence's in the last bits, so its seeded samples may part (docs/serve.md)."""
    prompts = [MESSAGES, [{"role": "user", "content": "import os"}]]
    config = GenerationConfig(max_new_tokens=24, **({"temperature": 1.0, "seed": 11} if sampled else {}))
    with load(str(artifacts[kind]), n_ctx=1024) as rt:
        alone = [rt.generate(p, config).token_ids for p in prompts]
    with load(str(artifacts[kind]), n_ctx=1024, parallel=2) as rt:
        streams = [rt.stream(p, config) for p in prompts]
        results = [None, None]
        while any(r is None for r in results):
            for i, s in enumerate(streams):
                if results[i] is None:
                    event = next(s)
                    if hasattr(event, "token_ids"):
                        results[i] = event
        assert [r.token_ids for r in results] == alone
        assert [r.engine["batched_max"] for r in results] == [2, 2]
        # a stream closed half-way frees its slot: the next two still run side by side
        early = rt.stream(prompts[0], config)
        next(early)
        early.close()
        again = rt.generate(prompts[1], config)
        assert again.token_ids == alone[1] and again.cached_tokens == (len(rt.prompt_ids(prompts[1])) - 1
                                                                      if kind == "gguf" else None)  # uncounted


def test_more_callers_than_parallel_slots_all_finish(artifacts):
    """Three generations on parallel=2: the third waits for a slot and runs when the first two end (in the same
    step, as equal budgets make them), then equals the answer alone."""
    import threading

    config = GenerationConfig(max_new_tokens=16, ignore_eos=True)
    with load(str(artifacts["gguf"]), n_ctx=1024) as rt:
        alone = rt.generate(MESSAGES, config).token_ids
    with load(str(artifacts["gguf"]), n_ctx=1024, parallel=2) as rt:
        got = [None] * 3
        threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, rt.generate(MESSAGES, config).token_ids),
                                    daemon=True) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert got == [alone] * 3


@pytest.mark.parametrize("cache_mb", [0, 64])
def test_a_returning_conversation_finds_its_prefix_when_conversations_outnumber_slots(artifacts, cache_mb):
    """Three conversations on two llama.cpp sequences: the third takes the first's sequence. With the host-RAM
    prompt cache, the first conversation's next turn restores its KV (it prefills only the new turn) and answers as
    a cold run does; without it, that turn prefills everything again."""
    config = GenerationConfig(max_new_tokens=24, ignore_eos=True)
    chats = [[{"role": "system", "content": f"You write Python. Conversation {i}."},
              {"role": "user", "content": line}] for i, line in enumerate(["def add(a, b):", "import os",
                                                                            "class Stack:"])]
    with load(str(artifacts["gguf"]), n_ctx=1024, parallel=2, prompt_cache_mb=cache_mb) as rt:
        first = [rt.generate(c, config) for c in chats]
        again = chats[0] + [{"role": "assistant", "content": first[0].text}, {"role": "user", "content": "x = 1"}]
        turn = rt.generate(again, config)
        stats = rt.prompt_cache_stats()
    with load(str(artifacts["gguf"]), n_ctx=1024, prefix_cache=False) as rt:
        cold = rt.generate(again, config)
    assert turn.token_ids == cold.token_ids
    held = first[0].prompt_tokens + len(first[0].token_ids)  # the first conversation's prompt and answer
    if cache_mb:
        assert turn.cached_tokens >= first[0].prompt_tokens and stats["restored"] == 1, (turn.cached_tokens, stats)
        assert turn.prompt_tokens - turn.cached_tokens < turn.prompt_tokens - held + 8
    else:
        assert turn.cached_tokens < 16 and stats is None


def test_a_constrained_answer_never_holds_a_turn_marker(artifacts):
    """llama.cpp's grammar reads a control token as its text: `<|assistant|>` passes as a JSON string's characters,
    where it would split a tool call or open a turn. While a grammar runs, glmkit's chain bans the control tokens
    that do not end a turn. Logits that favour `<|assistant|>` inside a JSON string: the chain picks a string
    character; without a grammar it picks `<|assistant|>` as told."""
    import ctypes

    from glmkit.runtimes.structure import Structure

    with load(str(artifacts["gguf"])) as rt:
        lc, marker = rt.llama_cpp, rt.tokenizer.special_ids["<|assistant|>"]
        quote, letter = rt.tokenizer.encode('"'), rt.tokenizer.encode("a")
        n = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(rt.llm._model.model))

        def pick(config) -> int:
            chain = rt._sampler(config, [])
            try:
                data = (lc.llama_token_data * n)(*(lc.llama_token_data(i, 0.0, 0.0) for i in range(n)))
                data[letter[0]].logit, data[marker].logit = 5.0, 10.0
                arr = lc.llama_token_data_array(data, n, -1, False)
                if config.structure is not None:
                    lc.llama_sampler_accept(chain, quote[0])  # inside the string now
                lc.llama_sampler_apply(chain, ctypes.byref(arr))
                return data[arr.selected].id
            finally:
                lc.llama_sampler_free(chain)

        assert len(quote) == 1 and len(letter) == 1
        assert pick(GenerationConfig()) == marker
        assert pick(GenerationConfig(structure=Structure.json({"type": "string"}))) == letter[0]


def test_the_gguf_shape_llama_cpp_reads_equals_gguf_py(artifacts):
    """The context length and KV shape a GGUF runtime sizes itself by, read from llama.cpp's vocab-only load, are
    gguf-py's reading of the same fields."""
    from gguf import GGUFReader

    from glmkit.runtimes.llamacpp import gguf_hparams

    fields = GGUFReader(str(artifacts["gguf"])).fields
    arch = fields["general.architecture"].contents()
    value = {k[len(arch) + 1:]: f.contents() for k, f in fields.items() if k.startswith(arch + ".")}
    want = {"context_length": value["context_length"], "layers": value["block_count"],
            "kv_heads": value["attention.head_count_kv"],
            "head_dim": value.get("attention.key_length")
            or value["embedding_length"] // value["attention.head_count"]}
    assert gguf_hparams(artifacts["gguf"]) == want
