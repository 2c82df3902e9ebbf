"""The wire contract: event models, decoders, the producer SDK, `ship`, topic admin."""


class IngestError(Exception):
    """Root of ingest errors (bad input is a value sent to the DLQ, not one of these)."""
