"""glm-serve MODEL: load a model once and serve the OpenAI API on 127.0.0.1 (by default) with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

from glmkit.glm4.errors import GlmkitError
from glmkit.runtimes.flags import add_engine_flags, engine_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glm-serve", description="Serve a GLM-4 model over the OpenAI API.")
    p.add_argument("model", help="OpenVINO IR dir, .gguf file, or any glm-convert SRC")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; 0.0.0.0 exposes the model to the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", help="the model id clients send (default: MODEL as given)")
    p.add_argument("--api-key", default=os.environ.get("GLMKIT_API_KEY"),
                   help="require Authorization: Bearer KEY on /v1 (default: $GLMKIT_API_KEY)")
    p.add_argument("--max-concurrency", type=int, default=4,
                   help="generations batched together in the engine (OpenVINO, llama.cpp; default 4)")
    p.add_argument("--max-queue", type=int, default=8,
                   help="requests that wait beyond those; more are answered 429 with Retry-After (default 8)")
    p.add_argument("--cache-ram", type=int, default=1024, metavar="MIB",
                   help="host RAM for other conversations' KV, so one that returns (when conversations outnumber "
                        "llama.cpp's --max-concurrency, or GLM-4V's one at a time) restores its prefix instead of "
                        "prefilling it (default 1024; 0 = off; reported in /health)")
    p.add_argument("--image-cache", type=int, default=256, metavar="MIB",
                   help="GLM-4V: image features kept by content for every conversation, so an image sent again "
                        "is not encoded again (default 256; 0 = off; reported in /health)")
    p.add_argument("--cors", action="append", metavar="ORIGIN", help="allow browser calls from ORIGIN (repeatable)")
    p.add_argument("--max-image-mb", type=float, default=10.0,
                   help="GLM-4V: the largest image a request may carry, encoded (default 10)")
    p.add_argument("--max-image-pixels", type=int, default=50_000_000,
                   help="GLM-4V: the most pixels an image may declare (default 50,000,000)")
    p.add_argument("--allow-remote-images", action="store_true",
                   help="GLM-4V: fetch http(s) image URLs (off: a server that fetches any URL a client names can "
                        "be made to reach hosts behind it)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_engine_flags(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not 0 < args.port < 65536:
            raise GlmkitError(f"--port {args.port}: give a port between 1 and 65535")
        if args.max_concurrency < 1 or args.max_queue < 0:
            raise GlmkitError("--max-concurrency must be at least 1 and --max-queue at least 0")
        import uvicorn

        from glmkit.runtimes import load
        from glmkit.runtimes.kinds import kind_of

        from .app import create_app
        from .plan import ImagePolicy

        options = engine_options(args)
        if args.max_image_mb <= 0 or args.max_image_pixels <= 0:
            raise GlmkitError("--max-image-mb and --max-image-pixels must be positive")
        caps = kind_of(args.model, args.backend).capabilities
        if caps.batching and not args.device.upper().startswith("NPU"):
            options["parallel"] = args.max_concurrency  # the others run one generation at a time
        if args.cache_ram < 0:
            raise GlmkitError(f"--cache-ram {args.cache_ram}: give MiB, 0 or more")
        if "prompt_cache_mb" in caps.options:
            options["prompt_cache_mb"] = args.cache_ram
        if args.image_cache < 0:
            raise GlmkitError(f"--image-cache {args.image_cache}: give MiB, 0 or more")
        if "image_cache_mb" in caps.options:
            options["image_cache_mb"] = args.image_cache
        runtime = load(args.model, backend=args.backend, device=args.device, **options)
        policy = ImagePolicy(int(args.max_image_mb * 2**20), args.max_image_pixels, args.allow_remote_images)
        app = create_app(runtime, args.model_name or args.model, args.api_key, args.max_queue, args.cors,
                         image_policy=policy)
        print(f"glm-serve · {args.model_name or args.model} on {runtime.backend} · "
              f"http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level)
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else 2
    except GlmkitError as e:
        print(f"glm-serve: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 0


def main() -> None:
    sys.exit(run())
