"""A W&B report of a sweep, built as code with ``wandb-workspaces`` (saved only when online)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from ..metric_names import EVAL, INFO
from .study import best_and_worst, param_columns, param_name

log = logging.getLogger(__name__)
STEP = INFO.frames
CLIP_KEYS = ["actor/clip_frac", "critic/value_clip_frac"]
ACTOR_GRAD_KEYS = ["actor/grad_norm_before_clip", "actor/grad_norm_after_clip"]
CRITIC_GRAD_KEYS = ["critic/grad_norm_before_clip", "critic/grad_norm_after_clip"]


def runs_were_online(frame: pd.DataFrame) -> bool:
    """Whether the study's W&B runs went to a server (wandb names their local copies
    ``run-<time>-<id>``; offline runs are ``offline-run-...``) and W&B is not forced offline."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    dirs = frame.get("wandb_run_dir", pd.Series(dtype=object)).dropna()
    return any(Path(str(d)).name.startswith("run-") for d in dirs)


def group_filter(study_name: str) -> str:
    """The runset filter: the study's runs are the W&B group named after the study."""
    return "Group = '{}'".format(study_name.replace("\\", "\\\\").replace("'", "\\'"))


def build_wandb_report(frame: pd.DataFrame, *, project: str, entity: str, title: str | None = None,
                       save: bool = False):
    """A ``wandb_workspaces.reports.v2.Report`` for the study: objective over training and
    against each knob, clip fractions, gradient norms, parallel coordinates and importances,
    over the runset ``Group = <study>``. Nothing touches the network unless ``save`` is true
    and the runs were online (see ``runs_were_online``); then ``report.save()`` uploads it."""
    import wandb_workspaces.reports.v2 as wr

    study = frame.attrs.get("study_name", "study")
    metric = frame.attrs.get("objective_metric") or EVAL.episode_reward
    params = [param_name(c) for c in param_columns(frame)]
    runset = wr.Runset(entity=entity, project=project, name=study, filters=group_filter(study))
    knob_panels = [wr.ScatterPlot(title=f"{metric} vs {p}", x=wr.Config(p), y=wr.SummaryMetric(metric))
                   for p in params]
    panels = [
        wr.LinePlot(title=f"objective: {metric}", x=STEP, y=[metric]),
        *knob_panels,
        wr.LinePlot(title="clip fractions", x=STEP, y=list(CLIP_KEYS)),
        wr.LinePlot(title="actor gradient norm (before / after clip)", x=STEP, y=list(ACTOR_GRAD_KEYS)),
        wr.LinePlot(title="critic gradient norm (before / after clip)", x=STEP, y=list(CRITIC_GRAD_KEYS)),
        wr.ParallelCoordinatesPlot(
            title="parallel coordinates",
            columns=[wr.ParallelCoordinatesPlotColumn(metric=wr.Config(p)) for p in params]
            + [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(metric))]),
        wr.ParameterImportancePlot(with_respect_to=metric),
    ]
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    best, _ = best_and_worst(frame)
    best_text = "no complete trial yet"
    if best is not None:
        row = frame.loc[frame["number"] == best].iloc[0]
        best_text = f"best trial {best}: {row['value']:.5g} (W&B run {row['wandb_run_id']})"
    summary = (f"Optuna study {study} ({frame.attrs.get('direction', '?')} {metric}): "
               + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + f"; {best_text}.")
    report = wr.Report(project=project, entity=entity, title=title or f"Sweep {study}",
                       description=f"Optuna sweep {study}", blocks=[
                           wr.H1(f"Sweep {study}"), wr.P(summary), wr.PanelGrid(runsets=[runset], panels=panels)])
    if save:
        if runs_were_online(frame):
            report.save()
        else:
            log.info("W&B report not saved: the study's runs are offline")
    return report
