"""glm-chat: a streaming terminal chat over glmkit.runtimes (any backend), or one answer with --prompt."""

from __future__ import annotations

import argparse
import sys

from glmkit.glm4.errors import GlmkitError

from .flags import add_engine_flags, engine_options
from .types import GenerationConfig, GenerationResult, TextDelta

HELP = ("commands: /reset (forget the conversation), /system TEXT (set the system prompt), /image PATH (send an "
        "image with the next message, GLM-4V), /stats, /exit")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glm-chat", description="Chat with a GLM-4 model in the terminal.",
                                epilog=HELP)
    p.add_argument("model", nargs="?", default="glm4-tiny",
                   help="OpenVINO IR dir, .gguf file, or any glm-convert SRC (default: glm4-tiny)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy (default; Z1 models: 0.6 as their card recommends)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling (Z1 default 0.95)")
    p.add_argument("--top-k", type=int, default=None, help="top-k sampling, 0 = off (Z1 default 40)")
    p.add_argument("--seed", type=int)
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past stop tokens (benchmarks)")
    p.add_argument("--show-thinking", action="store_true", help="print Z1 models' <think> reasoning")
    p.add_argument("--prompt", help="answer this one message and exit")
    p.add_argument("--image", metavar="PATH", help="an image sent with the first message (GLM-4V models)")
    add_engine_flags(p)
    return p


def _config(args, runtime) -> GenerationConfig:
    return GenerationConfig.for_model(runtime.chat_format.sampling, args.temperature, args.top_p, args.top_k,
                                      max_new_tokens=args.max_new_tokens, seed=args.seed, ignore_eos=args.ignore_eos)


def _answer(session, text: str, show_thinking: bool, out=sys.stdout) -> GenerationResult | None:
    """Stream one answer; Ctrl-C stops it and returns to the prompt. Reasoning is hidden unless asked for."""
    events = session.stream(text)
    thinking = False
    try:
        for event in events:
            if isinstance(event, GenerationResult):
                out.write("\n[stopped]\n" if event.finish_reason == "interrupted" else "\n")
                out.flush()
                return event
            if not isinstance(event, TextDelta):  # a tool call: glm-chat declares no tools
                continue
            if event.reasoning and not show_thinking:
                continue
            if event.reasoning != thinking:  # show where the thought ends and the answer starts
                out.write("<think>\n" if event.reasoning else "\n</think>\n")
                thinking = event.reasoning
            out.write(event.text)
            out.flush()
    except KeyboardInterrupt:
        events.close()
        out.write("\n[stopped]\n")
        out.flush()
    return None


def _stats(session) -> str:
    r = session.last
    if r is None:
        return "no answer yet"
    return (f"{session.runtime.backend} · prompt {r.prompt_tokens} tok · generated {len(r.token_ids)} tok · "
            f"TTFT {r.ttft_ms:.0f} ms · prefill {r.prefill_tps:.1f} t/s · decode {r.decode_tps:.1f} t/s · "
            f"reused {'?' if r.cached_tokens is None else r.cached_tokens} tok · peak RSS {r.peak_rss_mb:.0f} MB · "
            f"{r.finish_reason} · history {len(session.history) // 2} turns"
            + (f" ({session.trimmed} trimmed)" if session.trimmed else "") + _speculation(r.engine)
            + (f" · images encoded {session.runtime.images_encoded}" if hasattr(session.runtime, "images_encoded")
               else ""))


def _speculation(engine: dict) -> str:
    if engine.get("accepted") is None:
        return ""
    proposed = engine.get("proposed")
    return f" · kept {engine['accepted']}" + (f" of {proposed} proposed" if proposed is not None else "") + " tok"


def _attach(session, path: str) -> None:
    if not session.runtime.capabilities.images:
        raise GlmkitError(f"{session.runtime.name} reads text only; --image needs a GLM-4V model")
    if not path:
        raise GlmkitError("/image PATH: give the image's path")
    session.attach(path)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .load import load

    try:
        runtime = load(args.model, backend=args.backend, device=args.device, **engine_options(args))
        session = runtime.chat(system=args.system, config=_config(args, runtime))
        if args.image:
            _attach(session, args.image)
        if args.prompt is not None:
            return 0 if _answer(session, args.prompt, args.show_thinking) else 130
        print(f"glm-chat · {args.model} on {runtime.backend} · {HELP}", file=sys.stderr)
        while True:
            try:
                line = input("you> ")
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            cmd = line.strip()
            if not cmd:
                continue
            if cmd in ("/exit", "/quit"):
                return 0
            if cmd == "/reset":
                session.reset()
                print("[conversation cleared]")
            elif cmd.startswith("/system"):
                session.set_system(cmd[len("/system"):].strip())
                print(f"[system prompt {'set' if session.system else 'cleared'}]")
            elif cmd.startswith("/image"):
                try:
                    _attach(session, cmd[len("/image"):].strip())
                    print("[image attached to your next message]")
                except GlmkitError as e:
                    print(f"[{e}]")
            elif cmd == "/stats":
                print(_stats(session))
            elif cmd.startswith("/"):
                print(HELP)
            else:
                print("glm> ", end="", flush=True)
                _answer(session, line, args.show_thinking)
    except GlmkitError as e:
        print(f"glm-chat: error: {e}", file=sys.stderr)
        return e.exit_code


def main() -> None:
    sys.exit(run())
