"""Online detectors per series (river), drift, multivariate (pyod), episodes, replay."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# the modules holding numba-compiled functions (cache=True), and what they compile in
KERNEL_SOURCES = ("calibrate.py", "robust_core.py", "model_core.py")


class DetectorsError(Exception):
    """Root of detectors errors."""


def drop_stale_kernels(package: Path = Path(__file__).parent) -> bool:
    """Drop numba's on-disk cache of our kernels when any of their sources changed.

    Why: numba checks a cached function against its own file only, so after an edit (or an
    upgrade) of robust_core.py, model_core's cached kernel would go on running the arithmetic
    it compiled in from the old robust_core. One fingerprint of all the sources decides.
    True when a stale cache was dropped. A read-only install (numba then caches elsewhere)
    is left alone."""
    digest = hashlib.sha256()
    for name in KERNEL_SOURCES:
        digest.update((package / name).read_bytes())
    cache = package / "__pycache__"
    mark = cache / "stormwatch-kernels.sha256"
    try:
        if mark.read_text() == digest.hexdigest():
            return False
    except OSError:
        pass
    stems = tuple(name.removesuffix(".py") + "." for name in KERNEL_SOURCES)
    try:
        cache.mkdir(exist_ok=True)
        dropped = False
        for f in cache.iterdir():
            if f.name.startswith(stems) and f.suffix in (".nbi", ".nbc"):
                f.unlink(missing_ok=True)
                dropped = True
        tmp = mark.with_suffix(f".{os.getpid()}")
        tmp.write_text(digest.hexdigest())
        tmp.replace(mark)
    except OSError:
        return False
    return dropped


drop_stale_kernels()
