"""stormwatch: what all packages share — settings, the ClickHouse store and schema, the CLI."""

__version__ = "0.1.0"


class StormwatchError(Exception):
    """Root of every error stormwatch raises on purpose; the CLI prints these without a trace."""
