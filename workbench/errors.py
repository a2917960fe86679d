"""How the command line refuses bad input: one line on stderr, exit status 2.

Each layer raises its own error type (ConfigError, EnvConfigError, CheckpointError,
StorageError, SweepConfigError, ...); the commands turn any of them into one line here.
"""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_REFUSED = 2

# Detail lines OmegaConf appends to its messages; they repeat what the first line says.
_OMEGACONF_DETAIL = ("full_key:", "reference_type", "object_type", "    ")


def _scrub(text: str) -> str:
    from workbench.tracking.secrets import scrub_text  # here: workbench.tracking's commands import this module

    return scrub_text(text)


def one_line(error: BaseException) -> str:
    """The error and its causes as one line, secrets masked: 'outer: cause: root cause'."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = flatten(str(current))
        if text and not any(text in part for part in parts):
            parts.append(text)
        current = current.__cause__
    return _scrub(": ".join(parts) or type(error).__name__)


def flatten(message: str) -> str:
    """Lines joined into one: a sentence or a heading ('...:') runs on, list items get '; '."""
    message = message.split("Config search path:")[0]  # Hydra's search path: noise for a user
    flat = ""
    for line in message.splitlines():
        if not line.strip() or line.startswith(_OMEGACONF_DETAIL):
            continue
        line = line.strip()
        flat = line if not flat else flat + (" " if flat.endswith((":", ".")) else "; ") + line
    return flat


def refuse(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` as one line and exit 2."""
    print(f"{prog}: error: {flatten(_scrub(message))}", file=sys.stderr)
    raise SystemExit(EXIT_REFUSED)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage text is behind --help)."""

    def error(self, message: str) -> NoReturn:
        refuse(self.prog, f"{message} (see {self.prog} --help)")
