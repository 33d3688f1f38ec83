"""Progress display for long steps (rich), silent with quiet=True or when stderr is not a terminal in CI."""

from __future__ import annotations

import contextlib
import sys


def _console():
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def task(description: str, total: int | None = None, quiet: bool = False):
    """Yield an `advance(n=1)` callable for a step of `total` units (bytes, tensors, steps)."""
    if quiet:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    if total and total > 1 << 20:
        columns.insert(3, DownloadColumn())
    with Progress(*columns, console=_console(), transient=False, disable=not sys.stderr.isatty()) as p:
        tid = p.add_task(description, total=total)
        yield lambda n=1: p.advance(tid, n)
        p.update(tid, completed=total or 0)


def say(message: str, quiet: bool = False) -> None:
    """One status line on stderr (stdout stays for results)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)
