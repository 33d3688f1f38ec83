"""What C libraries (llama.cpp) print on file descriptors 1 and 2, caught so a user sees it only when it matters."""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def captured_c_output():
    """Redirect fds 1 and 2 into a temporary file for the block; yields a callable returning what was written."""
    with tempfile.TemporaryFile() as log:
        saved = [os.dup(1), os.dup(2)]
        try:
            for fd in (1, 2):
                os.dup2(log.fileno(), fd)
            yield lambda: (log.seek(0), log.read().decode(errors="replace"))[1]
        finally:
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
