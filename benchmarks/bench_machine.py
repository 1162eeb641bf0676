"""What machine a benchmark ran on: the line each benchmark prints beside its figures (the machine is shared and
noisy, so the load average at the start goes with it). Imported by the scripts of this folder as ``bench_machine``
(Python puts a script's own folder first on its path)."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe(*, extra: str = "") -> str:
    """``"<CPU>, N cores usable (M online), load average L; Python X.Y.Z[, extra]"``."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (f"{cpu_model()}, {usable} cores usable ({os.cpu_count()} online), load average {load:.1f}; "
            f"Python {platform.python_version()}")
    return f"{text}, {extra}" if extra else text
