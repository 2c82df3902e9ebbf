"""The memory benchmark's checkpoint figures: both formats, every series restored."""

from __future__ import annotations

import base64
import pickle
import zlib

from benchmarks.memory import _legacy_encode, run_memory
from detectors.base import ARRAYS
from streams.checkpoints import LZ4, decode_state


def test_memory_bench_times_a_checkpoint_of_every_series_in_both_formats() -> None:
    r = run_memory(300, 16)  # raises unless every checkpointed series restores
    assert r["series"] == 300
    for prefix in ("", "legacy_"):
        assert r[f"{prefix}checkpoint_s"] > 0
        assert r[f"{prefix}restore_us"] > 0
        assert r[f"{prefix}state_chars"] > 100


def test_the_legacy_encoder_writes_what_earlier_releases_wrote() -> None:
    """zlib text, untagged, with the model's arrays pickled as numpy objects."""
    from detectors.registry import model_factory

    model = model_factory()()
    for i in range(30):
        model.update({"y": float(i % 7), "t": 1_700_000_000.0 + i})
    text = _legacy_encode((model,))
    assert not text.startswith(LZ4)
    assert ARRAYS.encode() not in zlib.decompress(base64.b64decode(text))
    assert ARRAYS.encode() in pickle.dumps(model)  # what this release writes
    (back,) = decode_state(text)
    assert back.update({"y": 3.0, "t": 1_700_000_031.0}) == model.update(
        {"y": 3.0, "t": 1_700_000_031.0}
    )
