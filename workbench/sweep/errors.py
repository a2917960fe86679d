"""Errors raised for sweep configuration problems (shown to the user before any trial)."""


class SweepConfigError(ValueError):
    """A sweep file or sweeper setting is invalid; the message names the offending key."""
