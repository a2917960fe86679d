"""``workbench runs [DIR]``: a table of the local W&B runs."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence

import pandas as pd

from ..metric_names import EVAL, INFO
from ..errors import OneLineArgumentParser, one_line, refuse
from .reader import find_wandb_files, read_run

PROG = "workbench runs"

DEFAULT_ROOTS = ("outputs", "multirun")
COLUMNS = ["id", "group", "state", "frames", "final_return", "path"]


def _last(history: pd.DataFrame, key: str) -> Optional[float]:
    if key not in history.columns:
        return None
    values = history[key].dropna()
    return None if values.empty else values.iloc[-1]


def _row(wandb_file: Path) -> dict:
    try:
        run = read_run(wandb_file)
    except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
        return dict(id=None, group=None, state=f"unreadable: {exc}", frames=None, final_return=None, path=str(wandb_file.parent))
    final = _last(run.history, EVAL.episode_reward)
    if final is None:
        final = _last(run.history, INFO.episode_reward)
    state = run.state + (" (truncated)" if run.truncated else "")
    return dict(
        id=run.run_id,
        group=run.group,
        state=state,
        frames=_last(run.history, INFO.frames),
        final_return=final,
        path=str(run.run_dir),
    )


def list_runs(root: Path | str | Iterable[Path | str] = DEFAULT_ROOTS, include_superseded: bool = False) -> pd.DataFrame:
    """One row per run found under root(s): id, group, state, frames, final_return, path.

    Runs replaced by a fallback run (see Tracker) are left out unless asked for.
    """
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    files: List[Path] = []
    for r in roots:
        if Path(r).exists():
            files.extend(find_wandb_files(r))
    rows = []
    for f in files:
        superseded = (f.parent / "workbench-superseded.json").exists()
        if superseded and not include_superseded:
            continue
        rows.append(_row(f))
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_table(table: pd.DataFrame) -> str:
    cells = [COLUMNS] + [[_fmt(v) for v in row] for row in table[COLUMNS].itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _check_root(root: str) -> None:
    """A directory to search, or one .wandb file that reads as a W&B run."""
    path = Path(root)
    if not path.exists():
        refuse(PROG, f"no such directory: {root} (give run or output directories, or .wandb files)")
    if path.is_dir():
        return
    if path.suffix != ".wandb":
        refuse(PROG, f"{root} is not a directory or a .wandb file (give run or output directories, "
                     "or .wandb files)")
    try:
        read_run(path)
    except Exception as exc:  # noqa: BLE001 - the file is not what it claims: say so in one line
        refuse(PROG, f"{root} is not a readable W&B run file: {one_line(exc)}")


def runs_main(argv: Sequence[str]) -> int:
    parser = OneLineArgumentParser(prog=PROG, description="List local W&B runs.")
    parser.add_argument("dirs", nargs="*", help="directories to search (default: ./outputs ./multirun)")
    parser.add_argument("--all", action="store_true", help="also list runs replaced by a fallback run")
    args = parser.parse_args(list(argv))
    roots = args.dirs or list(DEFAULT_ROOTS)
    for root in args.dirs:
        _check_root(root)
    table = list_runs(roots, include_superseded=args.all)
    if table.empty:
        print(f"no W&B runs under {', '.join(roots)}")
        return 0
    print(format_table(table))
    return 0
