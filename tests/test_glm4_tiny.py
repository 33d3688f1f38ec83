"""glm4-tiny is a trained GLM-4: it predicts held-out text, knows the chat format, and survives int8."""

import json
import math

import pytest
import torch

from glmkit.convert import verify
from glmkit.sources import embedded

MAX_PACKAGE_BYTES = 8_000_000
# A uniform guess over 3,072 tokens scores 3072; the trained model scores about 20 on these first 4k tokens
# (34 over the script's 16k).
MAX_HELDOUT_PERPLEXITY = 45.0
MIN_EDIT_ACCURACY = 0.7  # the fifth and sixth stages: 0.49 → 0.76 (rename, repeat, quotes)
MIN_DRAFT_AGREEMENT = 0.4  # glm4-tiny-draft: 0.52 on the first 1,024 held-out tokens


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(embedded.glm4_tiny_path(), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded.glm4_tiny_path())


def test_ships_within_budget_as_a_glm4_checkpoint():
    path = embedded.glm4_tiny_path()
    assert sum(f.stat().st_size for f in path.iterdir()) <= MAX_PACKAGE_BYTES
    assert json.loads((path / "config.json").read_text())["architectures"] == ["Glm4ForCausalLM"]


def test_heldout_perplexity(model, tok):
    ids = tok(embedded.held_out_text(), add_special_tokens=False)["input_ids"][: 256 * 16]
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, 256):
            x = torch.tensor([ids[s:s + 257]])
            loss = model(x[:, :-1], labels=x[:, :-1].clone()).loss.item()
            nll, n = nll + loss * (x.shape[1] - 2), n + x.shape[1] - 2
    ppl = math.exp(nll / n)
    print(f"glm4-tiny held-out perplexity {ppl:.2f}")
    assert ppl < MAX_HELDOUT_PERPLEXITY


def test_answers_in_the_chat_format_and_stops(model, tok):
    """Asked with a def line, it answers with a function definition and ends its turn with a GLM-4 stop token."""
    prompt = tok.apply_chat_template([{"role": "user", "content": "def read_config(path):"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("[gMASK]<sop><|user|>\n")
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    stops = tok.convert_tokens_to_ids(["<|endoftext|>", "<|user|>", "<|observation|>"])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=300, do_sample=False, eos_token_id=stops, pad_token_id=stops[0])
    answer = out[0, ids.shape[1]:].tolist()
    assert answer[-1] in stops
    assert tok.decode(answer).startswith("\ndef ")  # GLM-4-0414's layout: "\n" after <|assistant|> marks an answer


def test_a_glm4_chat_never_opens_a_thought(model, tok):
    """One weights file serves the GLM-4 and the Z1 template; Z1's template writes `<think>` into the prompt, so
    the model must never learn to open one itself. On 40 held-out def/class lines, the first token of a thought
    after `<|assistant|>\\n` stays under 5 % (it was 26 % at the median, 54 % at most, when Z1 examples trained the
    `<think>` too: the int4 IR then opened the README's demo answer with a thought)."""
    from glmkit.sources import corpus

    lines = [ln for t in corpus.stdlib_texts(held_out=True) for ln in t.splitlines()
             if ln.startswith(("def ", "class ")) and ln.endswith(":")][:40]
    opener = tok.encode("<think>", add_special_tokens=False)[0]
    worst = 0.0
    for line in lines:
        text = tok.apply_chat_template([{"role": "user", "content": line}], add_generation_prompt=True,
                                       tokenize=False) + "\n"
        with torch.no_grad():
            logits = model(tok(text, add_special_tokens=False, return_tensors="pt").input_ids).logits[0, -1]
        worst = max(worst, logits.softmax(-1)[opener].item())
    assert len(lines) == 40 and worst < 0.05, worst


def _edit_accuracy(model, tok, kinds) -> float:
    """Teacher-forced top-1 accuracy on the answers of held-out repeat-with-change edits."""
    from glmkit.benchmarks.grounded import held_out_tasks

    hits = total = 0
    for task in [t for t in held_out_tasks(5) if t["kind"] in kinds]:
        prompt = tok.apply_chat_template(task["messages"], add_generation_prompt=True, tokenize=False) + "\n"
        p = tok(prompt, add_special_tokens=False).input_ids
        a = tok(task["expected"], add_special_tokens=False).input_ids
        with torch.no_grad():
            guess = model(torch.tensor([p + a])).logits[0, len(p) - 1:-1].argmax(-1).tolist()
        hits, total = hits + sum(g == t for g, t in zip(guess, a)), total + len(a)
    return hits / total


def test_it_repeats_its_input_with_the_change_asked(model, tok):
    """Asked to rename an identifier in, quote back or re-quote a function it never saw, it copies the function
    with the change (what prompt lookup then proposes): top-1 on the edited text, teacher-forced, over 15 held-out
    edits. Before the fifth training stage it shared 2 % of its answer with the input."""
    accuracy = _edit_accuracy(model, tok, ("rename", "repeat", "quotes"))
    assert accuracy > MIN_EDIT_ACCURACY, accuracy


def test_the_draft_shares_the_tokenizer_and_predicts_the_models_tokens(model, tok):
    """glm4-tiny-draft, its first layer trained alone: same vocabulary, smaller, and its top-1 agrees with
    glm4-tiny's on held-out text often enough to be worth proposing."""
    from transformers import AutoModelForCausalLM

    draft_dir = embedded.path("glm4-tiny-draft")
    draft = AutoModelForCausalLM.from_pretrained(draft_dir, dtype=torch.float32).eval()
    assert json.loads((draft_dir / "tokenizer.json").read_text()) == json.loads(
        (embedded.glm4_tiny_path() / "tokenizer.json").read_text())
    assert sum(p.numel() for p in draft.parameters()) < 0.7 * sum(p.numel() for p in model.parameters())
    ids = torch.tensor([tok(embedded.held_out_text(), add_special_tokens=False)["input_ids"][:1024]])
    with torch.no_grad():
        agree = (draft(ids).logits.argmax(-1) == model(ids).logits.argmax(-1)).float().mean().item()
    assert agree > MIN_DRAFT_AGREEMENT, agree


def test_the_wide_variant_computes_glm4_tiny(model, tok, tmp_path):
    """glm4-tiny-wide (zero-widened MLPs, for speculation on a memory-bound model): transformers gives the same
    logits as glm4-tiny's; a narrower widening than the shipped 65,536 keeps the test small."""
    from transformers import AutoModelForCausalLM

    wide_dir = embedded.widened(embedded.glm4_tiny_path(), intermediate=1024, out=tmp_path / "wide")
    wide = AutoModelForCausalLM.from_pretrained(wide_dir, dtype=torch.float32).eval()
    assert wide.config.intermediate_size == 1024
    ids = torch.tensor([tok(embedded.held_out_text(), add_special_tokens=False)["input_ids"][:256]])
    with torch.no_grad():
        torch.testing.assert_close(wide(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    assert embedded.widened(embedded.glm4_tiny_path(), intermediate=1024, out=tmp_path / "wide") == wide_dir


def test_verification_gate_catches_a_silently_broken_conversion(model, tok):
    """A conversion that loses the rope base (a classic silent failure) falls far below the int4 threshold."""
    from transformers import AutoModelForCausalLM

    ids = verify.verification_ids(embedded.glm4_tiny_path())
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
        broken = AutoModelForCausalLM.from_pretrained(embedded.glm4_tiny_path(), dtype=torch.float32,
                                                      rope_theta=500_000.0)
        bad = broken(torch.tensor([ids])).logits[0].numpy()
    result = verify.compare(ref, bad, "int4")
    assert not result.passed and result.mean_kl > 0.1, result  # honest int4 on glm4-tiny: KL ~0.015
    assert verify.compare(ref, ref, "fp16").passed


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    from glmkit.convert.openvino import to_openvino

    root = tmp_path_factory.mktemp("tiny-ov")
    return {wf: to_openvino("glm4-tiny", root / wf, weight_format=wf, quiet=True) for wf in ("fp16", "int8", "int4")}


def _verification(path):
    return json.loads((path / "glmkit.json").read_text())["verification"]


def test_openvino_fp16_greedy_equals_transformers_for_48_tokens(ov, model, tok):
    import openvino_genai as ov_genai

    prompt = tok.apply_chat_template([{"role": "user", "content": "class Stack:"}], add_generation_prompt=True,
                                     tokenize=False)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=48, do_sample=False, eos_token_id=None, pad_token_id=0)
    pipe = ov_genai.LLMPipeline(str(ov["fp16"]), "CPU", INFERENCE_PRECISION_HINT="f32")
    cfg = ov_genai.GenerationConfig(max_new_tokens=48, do_sample=False, ignore_eos=True)
    got = pipe.generate(pipe.get_tokenizer().encode(prompt, add_special_tokens=False), cfg).tokens[0]
    assert list(got) == ref[0, ids.shape[1]:].tolist()


def test_the_readme_demo_answers_without_a_thought(ov):
    """The README's first command: glm-chat on the int4 IR, asked `def read_config(path):`."""
    from glmkit.runtimes import GenerationConfig, load

    with load(str(ov["int4"])) as rt:
        answer = rt.generate([{"role": "user", "content": "def read_config(path):"}],
                             GenerationConfig(max_new_tokens=64)).text
    assert answer.startswith("def ") and "think>" not in answer, answer


def test_openvino_int8_agrees_with_the_source(ov):
    v = _verification(ov["int8"])
    print(f"glm4-tiny OpenVINO int8: top-1 {v['top1_agreement']:.2%}, mean KL {v['mean_kl']:.5f}")
    assert v["gated"] and v["top1_agreement"] >= 0.98 and v["mean_kl"] < 1e-3


def test_openvino_int4_agreement_and_kl_reported(ov):
    v = _verification(ov["int4"])
    print(f"glm4-tiny OpenVINO int4: top-1 {v['top1_agreement']:.2%}, mean KL {v['mean_kl']:.5f}")
    assert v["gated"] and v["passed"] and v["top1_agreement"] >= verify.THRESHOLDS["int4"]
    assert v["mean_kl"] > _verification(ov["int8"])["mean_kl"]  # int4 loses more than int8, as it must


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    from glmkit.convert.gguf import to_gguf

    root = tmp_path_factory.mktemp("tiny-gguf")
    return {t: to_gguf("glm4-tiny", root / f"{t}.gguf", outtype=t, quiet=True) for t in ("q8_0", "q4_k_m")}


def _gguf_verification(path):
    return json.loads(path.with_name(path.name + ".glmkit.json").read_text())["verification"]


def test_gguf_q8_0_agrees_with_the_source(gguf):
    v = _gguf_verification(gguf["q8_0"])
    print(f"glm4-tiny GGUF q8_0: top-1 {v['top1_agreement']:.2%}, mean KL {v['mean_kl']:.5f}")
    assert v["gated"] and v["top1_agreement"] >= 0.98 and v["mean_kl"] < 1e-3


def test_gguf_q4_k_m_agreement_and_kl_reported(gguf):
    v = _gguf_verification(gguf["q4_k_m"])
    print(f"glm4-tiny GGUF q4_k_m: top-1 {v['top1_agreement']:.2%}, mean KL {v['mean_kl']:.5f}")
    assert v["gated"] and v["passed"] and v["mean_kl"] > _gguf_verification(gguf["q8_0"])["mean_kl"]
