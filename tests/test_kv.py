"""One rule for what an engine's KV cache holds and reuses (runtimes/kv.py), checked on its own and on each engine:
after a call the cache holds the prompt and what was decoded of the answer, and the next prompt reuses exactly
the prefix it shares with that."""

import pytest

from glmkit.runtimes import GenerationConfig, load
from glmkit.runtimes.kv import HeldKV, shared_prefix

MESSAGES = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "def add(a, b):"},
            {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
            {"role": "user", "content": "class Stack:"}]
OTHER = MESSAGES[:-1] + [{"role": "user", "content": "class Queue:"}]


class FakeCache:
    """An engine's cache as a list of positions; `fail` makes the next trim fail."""

    def __init__(self):
        self.cells, self.fail, self.clears = [], False, 0

    def clear(self):
        self.cells, self.clears = [], self.clears + 1

    def trim(self, n):
        if self.fail:
            return False
        del self.cells[n:]
        return True


def test_the_rule_keeps_the_shared_prefix_and_drops_what_it_cannot_trust():
    cache = FakeCache()
    kv = HeldKV(cache.clear, cache.trim)
    kv.extend([1, 2, 3, 4])
    cache.cells = [1, 2, 3, 4]
    assert kv.reuse([1, 2, 9]) == 2 and kv.ids == [1, 2] and cache.cells == [1, 2]
    assert kv.reuse([1, 2]) == 1  # never the prompt's last token: its logits choose the first new one
    assert kv.reuse([1, 5], enabled=False) == 0 and cache.clears == 1 and kv.ids == []
    kv.hold([1, 2, 3], tag="image-a")
    assert kv.shared([1, 2, 3, 4], tag="image-b") == 0 and kv.shared([1, 2, 3, 4], tag="image-a") == 3
    cache.cells, cache.fail = [1, 2, 3], True
    assert kv.keep(1) == 0 and kv.ids == [] and kv.tag is None and cache.clears == 2  # a failed trim drops all
    assert shared_prefix([7, 8], [7, 8, 9]) == 2 and shared_prefix([], [1]) == 0


@pytest.fixture(scope="module")
def engines(tmp_path_factory, glmkit_cache):
    from glmkit.convert.gguf import to_gguf
    from glmkit.convert.openvino import to_openvino

    root = tmp_path_factory.mktemp("kv")
    ov = to_openvino("glm4-tiny", root / "ov", weight_format="fp16", verify=False, quiet=True)
    gguf = to_gguf("glm4-tiny", root / "m.gguf", outtype="f16", verify=False, quiet=True)
    rts = {"transformers": load("glm4-tiny"), "openvino": load(str(ov)), "llamacpp": load(str(gguf), n_ctx=1024)}
    yield rts
    for rt in rts.values():
        rt.close()


@pytest.mark.parametrize("kind", ["llamacpp", "openvino", "transformers"])
def test_each_engine_holds_and_reuses_by_the_rule(engines, kind):
    rt = engines[kind]
    config = GenerationConfig(max_new_tokens=12, ignore_eos=True)
    rt.reset_cache()
    first = rt.generate(MESSAGES, config)
    prompt = rt.prompt_ids(MESSAGES)
    held = list(rt.kv.ids)
    assert held[:len(prompt)] == prompt and held[len(prompt):] == first.token_ids[:len(held) - len(prompt)]
    assert len(held) >= len(prompt) + len(first.token_ids) - 1  # every token but perhaps the last was decoded
    expect = shared_prefix(held, rt.prompt_ids(OTHER))
    assert 0 < expect < len(prompt)
    second = rt.generate(OTHER, config)
    assert second.cached_tokens == expect
    rt.reset_cache()
    assert rt.kv.ids == [] and rt.generate(OTHER, config).cached_tokens == 0
