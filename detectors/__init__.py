"""Online detectors per series (river), drift, multivariate (pyod), episodes, replay."""


class DetectorsError(Exception):
    """Root of detectors errors."""
