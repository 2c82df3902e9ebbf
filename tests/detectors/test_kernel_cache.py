"""numba's on-disk cache is dropped when any kernel source changes, not only the caller's."""

from __future__ import annotations

import shutil
from pathlib import Path

import detectors
from detectors import KERNEL_SOURCES, drop_stale_kernels


def _package(tmp_path: Path) -> Path:
    pkg = tmp_path / "detectors"
    pkg.mkdir()
    for name in KERNEL_SOURCES:
        shutil.copy(Path(detectors.__file__).parent / name, pkg / name)
    (pkg / "__pycache__").mkdir()
    return pkg


def _cached(pkg: Path) -> None:
    for f in ("model_core.run-40.py311.nbi", "model_core.run-40.py311.1.nbc",
              "robust_core.learn-300.py311.nbi", "model.cpython-311.pyc"):  # fmt: skip
        (pkg / "__pycache__" / f).write_bytes(b"x")


def test_an_edit_of_a_callee_drops_every_kernels_cache_and_nothing_else(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    drop_stale_kernels(pkg)  # first sight: fingerprint taken
    _cached(pkg)
    assert drop_stale_kernels(pkg) is False  # unchanged sources: the cache is kept
    assert len(list((pkg / "__pycache__").glob("*.nb?"))) == 3

    with (pkg / "robust_core.py").open("a") as f:
        f.write("\n# an edit of the callee only\n")
    assert drop_stale_kernels(pkg) is True
    left = sorted(p.name for p in (pkg / "__pycache__").iterdir())
    assert left == ["model.cpython-311.pyc", "stormwatch-kernels.sha256"]
    _cached(pkg)
    assert drop_stale_kernels(pkg) is False  # the new fingerprint holds
