"""Errors raised for sweep configuration problems (shown to the user before any trial)."""
from hydra.errors import CompactHydraException


class SweepConfigError(CompactHydraException, ValueError):
    """A sweep file or sweeper setting is invalid; the message names the offending key.

    A CompactHydraException, so Hydra prints the message alone, without a stack trace."""


class StorageError(SweepConfigError):
    """The study's storage cannot be used (unknown scheme, not writable, server not reachable).
    Raised before the study is opened, so nothing has started."""
