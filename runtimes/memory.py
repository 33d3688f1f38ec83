"""Memory figures that mean the same on Linux, macOS and Windows (psutil; no Unix-only module at import)."""

from __future__ import annotations

import sys


def peak_rss_mb() -> float:
    """This process's peak resident set in MiB: Linux VmHWM, Windows' peak working set, macOS ru_maxrss (bytes
    there, KiB on Linux)."""
    import psutil

    peak = getattr(psutil.Process().memory_info(), "peak_wset", None)  # Windows
    if peak is not None:
        return peak / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def available_mb() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**20
