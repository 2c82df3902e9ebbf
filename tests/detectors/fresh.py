"""Run a script in a fresh interpreter: what a process loads on first use stays loaded, so
a warm-up is only seen working from a new one."""

from __future__ import annotations

import subprocess
import sys


def names_from_fresh(script: str, warm: bool) -> set[str]:
    """The comma-separated names `script` prints, run with argv[1] "warm" or "cold"."""
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script, "warm" if warm else "cold"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()  # fmt: skip
    return set(out.split(",")) - {""}
