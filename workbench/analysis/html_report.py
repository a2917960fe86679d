"""The static HTML report of a sweep: tables and PNG plots embedded as data URIs, no network."""
from __future__ import annotations

import datetime as dt
import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from matplotlib.figure import Figure

from .figures import figure_data_uri
from .histories import Histories, join_histories
from .importance import param_importances
from .pareto import is_multi_objective, pareto_front, plot_pareto_front
from .reeval import reevaluation_table, reevaluation_verdict
from .study import best_and_worst, load_study, param_columns, param_name, storage_spec
from .sweep_plots import (plot_learning_curves, plot_objective_vs_params, plot_parallel_coordinates,
                          plot_param_importances, plot_pruning_efficiency, plot_training_diagnostics,
                          pruning_efficiency, trial_frames)

log = logging.getLogger(__name__)

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; } th { background: #eee; }
.missing { background: #fff4e5; border-left: 5px solid #e69500; padding: 0.6em 1em; margin: 1em 0; }
.scroll { overflow-x: auto; } .plot img { max-width: 100%; border: 1px solid #ddd; } .plot { margin: 1em 0 2em; }
"""


@dataclass
class HtmlReport:
    path: Path
    missing: list[str] = field(default_factory=list)  # what the report says is missing
    n_trials: int = 0
    plots: list[str] = field(default_factory=list)  # titles of the plots that were drawn


def default_report_path(storage: str | None, study_name: str, base_dir: Path | None = None) -> Path:
    """Beside the study, like the sweep's summary CSV: ``<journal dir>/<study>.report.html``,
    or ``multirun/<study>/report.html`` for a database server."""
    spec = storage_spec(storage, study_name, base_dir)
    if spec.path is not None:
        return spec.path.parent / f"{study_name}.report.html"
    return Path(base_dir or Path.cwd()) / "multirun" / study_name / f"{study_name}.report.html"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return "-"
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return (f"<div class='scroll'><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")


def _trials_table(frame: pd.DataFrame, histories: Histories | None = None) -> pd.DataFrame:
    columns = ["number", "state", "value", "duration_s", "last_step", "frames", *param_columns(frame),
               "wandb_run_id", "fail_reason"]
    table = frame.reindex(columns=columns)
    # a pruned trial of an older study recorded no frames: its history knows them
    known = trial_frames(frame, histories).reindex(frame["number"]).to_numpy()
    table["frames"] = pd.array([None if pd.isna(v) else int(v) for v in known], dtype="Int64")
    table = table.rename(columns={c: param_name(c) for c in param_columns(frame)})
    ascending = frame.attrs.get("direction") == "minimize"
    order = table.assign(_done=table["state"].map({"COMPLETE": 0, "PRUNED": 1}).fillna(2))
    return order.sort_values(["_done", "value"], ascending=[True, ascending]).drop(columns="_done")


def missing_items(frame: pd.DataFrame, histories: Histories) -> list[str]:
    """Plain sentences: what this report could not show and why."""
    items = []
    if frame.empty:
        items.append("The study has no trials yet: nothing to plot.")
    elif not (frame["state"] == "COMPLETE").any():
        items.append("No trial has completed yet: best/worst trials and importances are not available.")
    for number, reason in sorted(histories.missing.items()):
        items.append(f"Trial {number}: {reason}.")
    return items


def _plots(frame: pd.DataFrame, histories: Histories) -> list[tuple[str, Callable[[], Figure]]]:
    front = [("Pareto front", lambda: plot_pareto_front(frame))] if is_multi_objective(frame) else []
    return front + [
        ("Objective vs each parameter", lambda: plot_objective_vs_params(frame)),
        ("Learning curves (coloured by objective)", lambda: plot_learning_curves(frame, histories)),
        ("Clip fractions and gradient norms: best and worst trial", lambda: plot_training_diagnostics(frame, histories)),
        ("Parameter importances", lambda: plot_param_importances(frame)),
        ("Parallel coordinates", lambda: plot_parallel_coordinates(frame)),
        ("Pruning efficiency", lambda: plot_pruning_efficiency(frame, histories)),
    ]


def _objective_text(frame: pd.DataFrame) -> str:
    if is_multi_objective(frame):
        return "objectives " + ", ".join(f"{m} ({d})" for m, d in zip(frame.attrs["objective_metrics"],
                                                                       frame.attrs["directions"]))
    return f"direction {frame.attrs.get('direction', '?')} · objective {frame.attrs.get('objective_metric') or '-'}"


def render_html(frame: pd.DataFrame, histories: Histories, report: HtmlReport) -> str:
    study = frame.attrs.get("study_name", "?")
    parts = [f"<h1>Sweep report: {html.escape(study)}</h1>",
             f"<p class='meta'>storage {html.escape(frame.attrs.get('storage', ''))} · "
             f"{html.escape(_objective_text(frame))} · written "
             f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>"]
    report.missing = missing_items(frame, histories)
    if report.missing:
        items = "".join(f"<li>{html.escape(m)}</li>" for m in report.missing)
        parts.append(f"<div class='missing' id='missing'><b>Missing</b><ul>{items}</ul></div>")
    if not frame.empty:
        counts = frame["state"].value_counts().rename_axis("state").reset_index(name="trials")
        parts += ["<h2>Trials by state</h2>", _table(counts)]
        if is_multi_objective(frame):
            front = pareto_front(frame)
            parts += [f"<h2 id='pareto'>Pareto front: {len(front)} trials</h2>",
                      "<p>No other complete trial is at least as good in every objective and better in one "
                      "(Optuna's <code>study.best_trials</code>). The rest of the report ranks trials by the "
                      "first objective.</p>", _table(front)]
        best, worst = best_and_worst(frame)
        if best is not None:
            row = frame.loc[frame["number"] == best].iloc[0]
            params = pd.DataFrame({"parameter": [param_name(c) for c in param_columns(frame)],
                                   "value": [row[c] for c in param_columns(frame)]})
            by = f" by {frame.attrs['objective_metrics'][0]}" if is_multi_objective(frame) else ""
            parts += [f"<h2>Best trial{html.escape(by)}: {best} (value {_fmt(row['value'])}, "
                      f"worst complete: trial {worst})</h2>",
                      f"<p>W&amp;B run {html.escape(_fmt(row['wandb_run_id']))} · "
                      f"{html.escape(_fmt(row['output_dir']))}</p>", _table(params)]
        parts += ["<h2 id='reevaluation'>Re-evaluation on fresh seeds</h2>",
                  f"<p>{html.escape(reevaluation_verdict(frame))}</p>"]
        table = reevaluation_table(frame)
        if not table.empty:
            parts.append(_table(table))
        importances = param_importances(frame)
        if not importances.empty:
            parts += ["<h2>Parameter importances</h2>",
                      _table(importances.rename_axis("parameter").reset_index())]
        parts += ["<h2>Frames by trial state</h2>",
                  _table(pruning_efficiency(frame, histories).reset_index())]
        parts += ["<h2>All trials</h2>", _table(_trials_table(frame, histories))]
        parts.append("<h2>Plots</h2>")
        for title, draw in _plots(frame, histories):
            try:
                uri = figure_data_uri(draw())
            except Exception as exc:  # noqa: BLE001 - one broken plot must not lose the report
                log.warning("plot %r failed: %s", title, exc)
                report.missing.append(f"Plot '{title}' could not be drawn: {exc}")
                parts.append(f"<div class='missing'>{html.escape(title)}: could not be drawn ({html.escape(str(exc))})</div>")
                continue
            report.plots.append(title)
            parts.append(f"<div class='plot'><h3>{html.escape(title)}</h3>"
                         f"<img alt='{html.escape(title)}' src='{uri}'></div>")
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Sweep report: {html.escape(study)}</title><style>{CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def write_html_report(storage: str | None, study_name: str, out: str | Path | None = None,
                      base_dir: Path | None = None, histories: Histories | None = None) -> HtmlReport:
    """Load the study and its runs and write the report (default: beside the study).
    Raises ``StudyNotFoundError``/``StorageNotFoundError`` for a study that is not there."""
    frame = load_study(storage, study_name, base_dir)
    histories = histories if histories is not None else join_histories(frame)
    path = Path(out) if out is not None else default_report_path(storage, study_name, base_dir)
    report = HtmlReport(path=path, n_trials=len(frame))
    text = render_html(frame, histories, report)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return report
