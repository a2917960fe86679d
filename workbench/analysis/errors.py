"""Errors with messages meant for users (the CLI prints them; no traceback)."""
from __future__ import annotations


class AnalysisError(Exception):
    """Something the user asked to analyse is not there or not usable."""


class StorageNotFoundError(AnalysisError, FileNotFoundError):
    """The study storage (journal or SQLite file) does not exist."""


class StudyNotFoundError(AnalysisError, KeyError):
    """The storage holds no study of that name; ``available`` lists the ones it holds."""

    def __init__(self, message: str, available: list[str] | None = None):
        super().__init__(message)
        self.available = list(available or [])

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class RunNotFoundError(AnalysisError, FileNotFoundError):
    """No local W&B run where one was expected."""
