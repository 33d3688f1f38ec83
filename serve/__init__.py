"""glmkit.serve — glm-serve, an OpenAI-compatible server for GLM-4 models with GLM-4's own tool calls.

    from glmkit.runtimes import load
    from glmkit.serve import create_app
    app = create_app(load("glm4-tiny-ov"))      # an ASGI app: run it with uvicorn, or mount it in yours
"""

from .app import create_app

__all__ = ["create_app"]
