"""`stormwatch top` over the simulated demo: the frame fits an 80×24 terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from stormwatch.commands.top import collect, render
from stormwatch.settings import StormwatchSettings
from stormwatch.simulate import Simulation
from stormwatch.store import Store


def _screen(frame_renderable: object) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=80, height=24, color_system=None, force_terminal=False,
                      legacy_windows=False)  # fmt: skip
    console.print(frame_renderable)
    return out.getvalue().rstrip("\n").split("\n")


def test_top_renders_open_episodes_and_health_in_80x24(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation]
) -> None:
    db = demo[0].database
    frame = collect(chdb_store, db, datetime.now(UTC))
    lines = _screen(render(frame, 24))
    assert len(lines) <= 24
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    text = "\n".join(lines)
    opened = chdb_store.query(f"SELECT count() FROM {db}.anomalies FINAL WHERE is_open = 1")
    assert f"{opened.rows[0][0]} open" in text
    assert "Episodes: open" in text and "Recent drift" in text and "health" in text
    assert frame.episodes, "the demo's last 15 minutes had episodes"
    first = frame.episodes[0]
    assert (first["service"] or "-")[:11] in text and first["explanation"][:40] in text
    assert frame.health["events_per_s"] > 0 and frame.health["series"] > 0
    assert frame.health["skipped_1h"] == 0 and "skipped" not in text


def test_top_shows_source_offsets_never_normalized(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation]
) -> None:
    """A worker's `normalize.skipped_offsets` (streams.gaps) shows in the footer, in 80x24."""
    from dataclasses import replace

    frame = collect(chdb_store, demo[0].database, datetime.now(UTC))
    frame = replace(frame, health=frame.health | {"skipped_1h": 3.0})
    lines = _screen(render(frame, 24))
    assert "skipped offsets 1h 3" in lines[-1] and all(len(x) <= 80 for x in lines)


def test_top_once_prints_a_frame(
    demo: tuple[StormwatchSettings, Simulation], chdb_store: Store, monkeypatch, capsys
) -> None:
    """The command path: `stormwatch top --once` with the store it opens."""
    import stormwatch.commands.top as top

    class Borrowed:  # the session engine is shared: the command must not close it
        def __getattr__(self, name: str) -> object:
            return getattr(chdb_store, name)

        def close(self) -> None:
            return None

    monkeypatch.setattr(top, "open_store", lambda _s: Borrowed())
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    from stormwatch.cli import main

    monkeypatch.setenv("STORMWATCH_DATABASE", demo[0].database)
    assert main(["top", "--once"]) == 0
    out = capsys.readouterr().out
    assert "Episodes: open" in out and max(len(x) for x in out.splitlines()) <= 80
