"""Grafana dashboards as code over the ClickHouse data source: build, provision, push."""

from stormwatch import StormwatchError


class DashboardsError(StormwatchError):
    """A dashboard could not be built, written or pushed (the CLI prints it without a trace)."""
