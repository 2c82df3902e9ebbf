"""One simulated demo run per session, shared by the dashboard, report and top tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stormwatch.settings import StormwatchSettings
from stormwatch.simulate import Simulation, simulate
from stormwatch.store import Store, create_schema


@pytest.fixture(scope="session")
def demo(
    chdb_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> tuple[StormwatchSettings, Simulation]:
    """Settings of a database filled by a 20-minute simulated demo that ended just now."""
    from stormwatch.settings import load_settings
    from tests.conftest import unique

    settings = load_settings(database=unique("demo"), data_dir=tmp_path_factory.mktemp("demo"))
    create_schema(chdb_store, settings)
    sim = simulate(chdb_store, settings.database, duration_s=1200)
    return settings, sim


@pytest.fixture
def demo_settings(demo: tuple[StormwatchSettings, Simulation]) -> StormwatchSettings:
    return demo[0]


@pytest.fixture
def store_for(chdb_store: Store) -> Callable[[StormwatchSettings], Store]:
    return lambda _settings: chdb_store
