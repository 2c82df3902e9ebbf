from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pytest

from stormwatch.cli import main


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "timestamp,value") -> Path:
    path.write_text(header + "\n" + "".join(f"{t},{v}\n" for t, v in rows))
    return path


def series(n: int = 400, spike: int = 300) -> list[tuple[str, str]]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        y = 50 + 5 * math.sin(2 * math.pi * i / 24) + rng.gauss(0, 0.5) + (15 if i == spike else 0)
        rows.append((str(1_700_000_000 + 300 * i), f"{y:.4f}"))
    return rows


def read_out(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_replay_writes_one_scored_row_per_input_row(tmp_path: Path) -> None:
    rows = series()
    out = tmp_path / "scores.csv"
    assert main(["replay", "--input", str(write_csv(tmp_path / "in.csv", rows)),
                 "--output", str(out)]) == 0  # fmt: skip
    got = read_out(out)
    assert list(got[0])[:3] == ["timestamp", "value", "anomaly_score"]
    assert [(r["timestamp"], r["value"]) for r in got] == rows
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in got)
    flagged = [i for i, r in enumerate(got) if r["is_anomaly"] == "1"]
    # once the daily-like cycle is learned (a few cycles), only the spike alerts
    assert [i for i in flagged if i >= 100] == [300]


def test_replay_is_causal(tmp_path: Path) -> None:
    rows = series()
    changed = rows[:200] + [(t, "999") for t, _ in rows[200:]]
    outs = []
    for k, data in enumerate((rows, changed)):
        out = tmp_path / f"o{k}.csv"
        main(["replay", "--input", str(write_csv(tmp_path / f"i{k}.csv", data)),
              "--output", str(out)])  # fmt: skip
        outs.append([r["anomaly_score"] for r in read_out(out)][:200])
    assert outs[0] == outs[1]


def test_replay_accepts_iso_timestamps_and_gaps(tmp_path: Path) -> None:
    rows = [(f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z", "" if i == 30 else str(10 + i % 3))
            for i in range(90)]  # fmt: skip
    out = tmp_path / "o.csv"
    assert main(["replay", "--input", str(write_csv(tmp_path / "i.csv", rows)),
                 "--output", str(out), "--detector", "zscore"]) == 0  # fmt: skip
    got = read_out(out)
    assert len(got) == 90 and got[30]["anomaly_score"] == "0.0"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,val\n1,2\n", "line 1: header"),
        ("timestamp,value\n1,2\nyesterday,3\n", "line 3: bad timestamp"),
        ("timestamp,value\n1,2\n2,abc\n", "line 3: bad value"),
        ("timestamp,value\n1,2,3\n", "line 2: expected 2 fields"),
    ],
)
def test_replay_bad_csv_names_the_line(tmp_path: Path, capsys, content: str, message: str) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(content)
    assert main(["replay", "--input", str(src), "--output", str(tmp_path / "o.csv")]) == 2
    assert message in capsys.readouterr().err


def test_replay_unknown_detector_is_a_clear_error(tmp_path: Path, capsys) -> None:
    src = write_csv(tmp_path / "i.csv", series(20))
    assert main(["replay", "--input", str(src), "--output", "-", "--detector", "nope"]) == 2
    assert "unknown detector 'nope'" in capsys.readouterr().err
