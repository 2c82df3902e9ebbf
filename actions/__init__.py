"""Guarded remediations: policies propose, a person approves in Slack, executors run once."""


class ActionsError(Exception):
    """Root of every error the actions package raises on purpose (bad policy, bad action)."""
