"""glmkit.sources — where a GLM-4 comes from, below the converters and the runtimes that both read it.

checkpoint (a validated local checkpoint, tensors read lazily), shards, tokenizer (building and converting GLM-4
tokenizers), corpus (offline text), embedded (glm4-tiny and its kin, shipped in data/), synthetic (seeded
checkpoints of real shapes), remap (chatglm → glm; any source as a transformers-native checkpoint), layout (the
tensors a config implies) and source (SRC → a local directory). It imports glmkit.glm4 and glmkit.common only.
"""
