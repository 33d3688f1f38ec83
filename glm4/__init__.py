"""glmkit.glm4 — what GLM-4 is: the bottom layer every other part of glmkit builds on, importing none of them.

  errors      GlmkitError: one line naming the problem and the fix (exit code 2)
  families    the registry: families, special and stop tokens, chat templates, rope, config field names
  template    chat templates rendered as transformers renders them (jinja2, no transformers)
  messages    OpenAI messages as GLM-4 turns, where tools go, which chat template an artifact uses
  prompt      a request rendered once: token ids, and the OutputSpec saying how to read the reply
  toolcalls   GLM-4's tool-call markup (`name\\n{json}`, joined by <|assistant|>) as data
  parser      the one output parser: generated text in, reasoning / text / tool-call / end events out

convert/, runtimes/, serve/ and benchmarks/ import from here; nothing here imports them (tests/test_imports.py).
"""
