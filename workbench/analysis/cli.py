"""``workbench report <study>``: the HTML report (and, for online runs, a W&B report)."""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import EXIT_REFUSED, OneLineArgumentParser, one_line
from .errors import AnalysisError
from .histories import join_histories, project_and_entity
from .html_report import write_html_report
from .study import load_study, storage_spec
from ..sweep.errors import StorageError
from ..sweep.storage import check_storage
from .wandb_report import build_wandb_report, runs_were_online


def _parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(prog="workbench report",
                                description="Write a self-contained HTML report of an Optuna sweep.")
    p.add_argument("study", help="study name (the sweep name unless --study-name was given)")
    p.add_argument("--storage", help="journal file or Optuna URL (default: sweeps_db/<study>.journal, "
                   "or $WORKBENCH_SWEEP_STORAGE)")
    p.add_argument("--out", help="HTML file to write (default: <study>.report.html beside the study)")
    p.add_argument("--wandb-report", choices=("auto", "always", "never"), default="auto",
                   help="also save a W&B report: auto = when the study's runs were online (default)")
    p.add_argument("--project", help="W&B project of the runs (default: from the trials' configs)")
    p.add_argument("--entity", help="W&B entity of the runs (default: from the trials' configs or your default)")
    return p


def _say(message: str) -> None:
    print(f"workbench report: {message}", file=sys.stderr)


def _wandb_report(frame, args) -> None:
    project, entity = args.project, args.entity
    for _, row in frame.iterrows():  # the trials' configs name the project the runs went to
        if project and entity:
            break
        project, entity = project_and_entity(row, project, entity)
    if not entity:
        from .histories import default_api
        entity = default_api().default_entity
    report = build_wandb_report(frame, project=project or "workbench", entity=entity)
    report.save()
    print(f"W&B report: {getattr(report, 'url', '') or report.title}")


def _check_server_storage(storage: str | None, study: str) -> None:
    """A database URL the report cannot use (unknown scheme, server down) is one line; files are
    checked by load_study, which only reads them."""
    spec = storage_spec(storage, study)
    if spec.kind == "rdb" and spec.dialect != "sqlite":
        check_storage(spec)


def report_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("workbench.analysis").setLevel(logging.ERROR)  # the report lists what is missing
    try:
        _check_server_storage(args.storage, args.study)
        frame = load_study(args.storage, args.study)
        histories = join_histories(frame, project=args.project, entity=args.entity)
        result = write_html_report(args.storage, args.study, args.out, histories=histories)
    except (AnalysisError, StorageError) as exc:
        _say(f"error: {one_line(exc)}")
        return EXIT_REFUSED
    except Exception as exc:  # noqa: BLE001 - a clear line, never a traceback
        _say(f"error: {type(exc).__name__}: {one_line(exc)}")
        return 1
    print(f"HTML report: {result.path}")
    if result.n_trials == 0:
        _say(f"study {args.study!r} has no trials yet; the report says so")
    elif histories.missing:
        _say(f"{len(histories.missing)} of {result.n_trials} trials have no W&B history "
             f"(listed under 'Missing' in the report): trials {', '.join(map(str, sorted(histories.missing)))}")
    if args.wandb_report == "always" or (args.wandb_report == "auto" and runs_were_online(frame)):
        try:
            _wandb_report(frame, args)
        except Exception as exc:  # noqa: BLE001
            _say(f"W&B report not saved: {type(exc).__name__}: {exc}")
            return 1 if args.wandb_report == "always" else 0
    return 0


def main() -> int:  # python -m workbench.analysis.cli
    return report_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
