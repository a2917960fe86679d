"""W&B run lifecycle for training runs, and an offline reader for ``.wandb`` files."""
from .cli import list_runs, runs_main
from .config import LoggerConfig
from .reader import RunData, find_wandb_files, read_run
from .run import Tracker, resolve_mode, start_service
from .secrets import scrub_secrets, scrub_text
from .wandb_log import NotAWandbFileError

__all__ = [
    "LoggerConfig",
    "NotAWandbFileError",
    "RunData",
    "Tracker",
    "find_wandb_files",
    "list_runs",
    "read_run",
    "resolve_mode",
    "runs_main",
    "scrub_secrets",
    "scrub_text",
    "start_service",
]

