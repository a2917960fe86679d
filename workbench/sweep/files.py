"""Sweep files (``sweeps/<name>.yaml``): found and parsed before Hydra sees them, so a YAML
syntax error is one line naming the file, the line and the problem, not Hydra's traceback."""
from __future__ import annotations

from pathlib import Path

import yaml

from workbench.sweep.errors import SweepConfigError

def sweep_dirs(overrides: list[str] = ()) -> list[Path]:
    """Where Hydra finds sweep files, in its order (hydra_plugins/workbench_searchpath.py): the user's
    ``./conf/sweep/``, the packaged (or checkout's) ``conf/sweep/``, the user's ``./sweeps/``, then
    the ``sweep/`` folder of every ``hydra.searchpath=[file://DIR]`` override."""
    from workbench.packaged import conf_dir

    dirs = []
    for candidate in (Path.cwd() / "conf" / "sweep", conf_dir() / "sweep", Path.cwd() / "sweeps"):
        if candidate.is_dir() and not any(candidate.resolve() == d.resolve() for d in dirs):
            dirs.append(candidate)
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            for entry in value.strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if entry.startswith("file://"):
                    dirs.append(Path(entry.removeprefix("file://")) / "sweep")
    return dirs


def find_sweep_file(name: str, overrides: list[str] = ()) -> Path | None:
    for directory in sweep_dirs(overrides):
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def check_sweep_file(path: Path) -> None:
    """Refuse a file that is not YAML, or whose top level is not a mapping."""
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise SweepConfigError(f"sweep file {path}: YAML syntax error at {where}: {err.problem or err.context}; "
                               "fix the file (it must be a YAML mapping)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SweepConfigError(f"sweep file {path} is not a YAML file ({type(err).__name__}); "
                               "it must be a YAML mapping") from None
    if content is not None and not isinstance(content, dict):
        raise SweepConfigError(f"sweep file {path}: the top level is a {type(content).__name__}; "
                               "it must be a YAML mapping (defaults:, hydra: sweeper: ...)")


def check_sweep_overrides(overrides: list[str]) -> None:
    """Check the files named by ``+sweep=<name>`` overrides that live in the workbench's sweeps/."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "sweep" and value:
            path = find_sweep_file(value, overrides)
            if path is not None:
                check_sweep_file(path)
