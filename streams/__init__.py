"""The faust app and its agents: normalize, detect, sink; batching, windows and the DLQ."""


class StreamsError(Exception):
    """Root of streams errors."""
