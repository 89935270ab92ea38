"""What the agent refuses, by exit code (the CLI exits with it)."""

from __future__ import annotations


class WeightsError(Exception):
    exit_code = 1


class DiskSpaceError(WeightsError):
    exit_code = 3


class IntegrityError(WeightsError):
    exit_code = 4


class UnsafeListingError(WeightsError):
    """A listing names a path that would land outside the model directory: nothing is written."""

    exit_code = 5
