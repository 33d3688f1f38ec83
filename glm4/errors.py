"""The one error type users see: a single line that names the problem and the fix."""


class GlmkitError(Exception):
    """Bad input or an unavailable resource. CLIs print it as one line and exit with code 2."""

    exit_code = 2


class VerificationError(GlmkitError):
    """A conversion ran but its output does not agree with the source; the output was kept aside."""

    exit_code = 3


def require(modules: tuple[str, ...], what: str, extra: str = "convert") -> None:
    """Refuse, in one line with the pip command, a command whose half of glmkit is not installed: the runtime
    install (`pip install glmkit`) has no torch, transformers, optimum or NNCF."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise GlmkitError(f"{what} needs {', '.join(missing)}, which this install lacks: "
                          f"pip install \"glmkit[{extra}]\"")


CONVERT_STACK = ("torch", "transformers", "optimum", "nncf")
REFERENCE_STACK = ("torch", "transformers")
