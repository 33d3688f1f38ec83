"""The one error type users see: a single line that names the problem and the fix."""


class GlmkitError(Exception):
    """Bad input or an unavailable resource. CLIs print it as one line and exit with code 2."""

    exit_code = 2


class VerificationError(GlmkitError):
    """A conversion ran but its output does not agree with the source; the output was kept aside."""

    exit_code = 3
