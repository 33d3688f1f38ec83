"""The one error type users see: a single line that names the problem and the fix."""


class GlmkitError(Exception):
    """Bad input or an unavailable resource. CLIs print it as one line and exit with code 2."""

    exit_code = 2
