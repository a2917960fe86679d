"""Plots of one sweep: each takes the study DataFrame (and the histories) and returns a Figure."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..metric_names import EVAL
from .figures import STATE_COLORS, message_figure, new_figure, readable_log_axis
from .histories import STEP
from .importance import param_importances
from .study import best_and_worst, param_columns, param_name

CMAP = "viridis"
# clip fractions and gradient norms: (title, keys drawn on one axes; the 2nd key dashed)
DIAGNOSTIC_PANELS = [
    ("actor clip fraction", ["actor/clip_frac"]),
    ("critic value clip fraction", ["critic/value_clip_frac"]),
    ("actor grad norm (before / after clip)", ["actor/grad_norm_before_clip", "actor/grad_norm_after_clip"]),
    ("critic grad norm (before / after clip)", ["critic/grad_norm_before_clip", "critic/grad_norm_after_clip"]),
]


def objective_label(frame: pd.DataFrame) -> str:
    return f"objective ({frame.attrs.get('objective_metric') or 'value'})"


def _is_numeric(column: pd.Series) -> bool:
    values = column.dropna()
    return len(values) > 0 and all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
                                   for v in values)


def _positions(column: pd.Series) -> tuple[pd.Series, list[str] | None]:
    """Numeric columns as they are; categorical ones as 0..k-1 with their labels."""
    if _is_numeric(column):
        return column.astype(float), None
    labels = sorted({str(v) for v in column.dropna()})
    index = {label: i for i, label in enumerate(labels)}
    return column.map(lambda v: np.nan if v is None or (isinstance(v, float) and math.isnan(v))
                      else float(index[str(v)])), labels


def _value_norm(frame: pd.DataFrame) -> Normalize:
    values = frame["value"].dropna()
    low, high = (values.min(), values.max()) if len(values) else (0.0, 1.0)
    return Normalize(low, high if high > low else low + 1e-9)


def plot_objective_vs_params(frame: pd.DataFrame) -> Figure:
    """One scatter per knob: the objective of each trial against the sampled value
    (complete trials filled, pruned ones hollow at their last reported value)."""
    columns = param_columns(frame)
    shown = frame[frame["state"].isin(["COMPLETE", "PRUNED"]) & frame["value"].notna()]
    if not columns or shown.empty:
        return message_figure("objective vs parameters", "no complete or pruned trial with a value yet")
    fig, axes = new_figure(len(columns))
    for ax, column in zip(axes, columns):
        x, labels = _positions(shown[column])
        for state, marker_face in (("COMPLETE", None), ("PRUNED", "none")):
            part = shown["state"] == state
            if part.any():
                ax.scatter(x[part], shown.loc[part, "value"], label=state.lower(), s=36,
                           edgecolors=STATE_COLORS[state],
                           facecolors=marker_face or STATE_COLORS[state])
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels)
        dist = frame.attrs.get("distributions", {}).get(param_name(column), "")
        if '"log": true' in dist:
            readable_log_axis(ax)
        ax.set_xlabel(param_name(column), fontsize="small")  # the whole key: tails are ambiguous
        ax.set_ylabel(objective_label(frame))
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{frame.attrs.get('study_name', '')}: objective vs each parameter")
    return fig


def plot_learning_curves(frame: pd.DataFrame, histories: dict[int, pd.DataFrame],
                         metric: str | None = None, x: str = STEP) -> Figure:
    """``metric`` over training, one line per trial, coloured by the trial's objective
    (pruned trials dashed)."""
    metric = metric or frame.attrs.get("objective_metric") or EVAL.episode_reward
    states = dict(zip(frame["number"], frame["state"]))
    values = dict(zip(frame["number"], frame["value"]))
    curves = {n: h for n, h in histories.items() if metric in h.columns and h[metric].notna().any()}
    if not curves:
        return message_figure("learning curves", f"no trial history has {metric!r}")
    fig, (ax,) = new_figure(1, width=8.0, height=4.5)
    norm, cmap = _value_norm(frame), colormaps[CMAP]
    for number in sorted(curves):
        history = curves[number].dropna(subset=[metric])
        xs = history[x] if x in history.columns else history.index
        value = values.get(number, math.nan)
        color = "lightgray" if value is None or math.isnan(value) else cmap(norm(value))
        ax.plot(xs, history[metric], color=color, lw=1.6, label=f"trial {number}",
                linestyle="--" if states.get(number) == "PRUNED" else "-",
                marker="o" if len(history) <= 3 else None, ms=5)  # a pruned trial may have 1 point
    fig.colorbar(_scalar_mappable(norm, cmap), ax=ax, label=objective_label(frame))
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial (dashed: pruned)")
    if len(curves) <= 12:
        ax.legend(fontsize="x-small", ncols=2)
    return fig


def _scalar_mappable(norm: Normalize, cmap):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def plot_training_diagnostics(frame: pd.DataFrame, histories: dict[int, pd.DataFrame],
                              trials: Sequence[int] | None = None, x: str = STEP) -> Figure:
    """Clip fractions and gradient norms over training for some trials (default: the best
    and the worst complete trial)."""
    if trials is None:
        best, worst = best_and_worst(frame)
        if best is None:
            return message_figure("clip fractions and gradient norms", "no complete trial yet")
        labels = {best: "best"} if best == worst else {best: "best", worst: "worst"}
    else:
        labels = {int(n): "" for n in trials}
    missing = [n for n in labels if n not in histories]
    drawn = [n for n in labels if n in histories]
    if not drawn:
        return message_figure("clip fractions and gradient norms",
                              f"no W&B history for trial(s) {', '.join(map(str, missing))}")
    fig, axes = new_figure(len(DIAGNOSTIC_PANELS), ncols=2, width=5.5, height=3.3)
    colors = ["tab:green", "tab:red", "tab:blue", "tab:purple", "tab:brown"]
    for ax, (title, keys) in zip(axes, DIAGNOSTIC_PANELS):
        for color, number in zip(colors, drawn):
            history = histories[number]
            xs = history[x] if x in history.columns else history.index
            for key, style in zip(keys, ("-", "--")):
                if key in history.columns:
                    tag = f"trial {number}" + (f" ({labels[number]})" if labels[number] else "")
                    suffix = "" if len(keys) == 1 else (" before" if style == "-" else " after")
                    ax.plot(xs, history[key], color=color, linestyle=style, label=tag + suffix)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(x)
        if ax.get_lines():
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    note = f" (no history: trial {', '.join(map(str, missing))})" if missing else ""
    fig.suptitle("clip fractions and gradient norms" + note)
    return fig


def plot_param_importances(frame: pd.DataFrame) -> Figure:
    """``optuna.importance`` (fANOVA) as horizontal bars; says why when it cannot be computed."""
    importances = param_importances(frame)
    if importances.empty:
        return message_figure("parameter importances", importances.attrs.get("reason", "not available"))
    fig, (ax,) = new_figure(1, width=7.0, height=0.5 * len(importances) + 1.5)
    ordered = importances.sort_values()
    ax.barh(list(ordered.index), ordered.values, color="tab:blue")
    for y, v in enumerate(ordered.values):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize="small")
    ax.set_xlabel("importance (normalised)")
    ax.set_title("parameter importances (optuna.importance)")
    return fig


def plot_parallel_coordinates(frame: pd.DataFrame, include_pruned: bool = True) -> Figure:
    """Each trial a line across one axis per parameter and the objective, coloured by the
    objective; axes are scaled to [0, 1] with their own min and max written at the ends."""
    states = ["COMPLETE", "PRUNED"] if include_pruned else ["COMPLETE"]
    shown = frame[frame["state"].isin(states) & frame["value"].notna()]
    columns = param_columns(frame)
    if shown.empty or not columns:
        return message_figure("parallel coordinates", "no complete or pruned trial with a value yet")
    axes_data, names, ends = [], [], []
    for column in [*columns, "value"]:
        pos, labels = _positions(shown[column])
        low, high = pos.min(), pos.max()
        span = high - low if high > low else 1.0
        axes_data.append(((pos - low) / span).to_numpy())
        names.append(param_name(column) if column != "value" else "objective")
        ends.append((labels[0], labels[-1]) if labels else (f"{low:.3g}", f"{high:.3g}"))
    data = np.vstack(axes_data).T  # trials x axes
    fig, (ax,) = new_figure(1, width=max(8.0, 1.7 * len(names)), height=4.8)
    norm, cmap = _value_norm(frame), colormaps[CMAP]
    xs = np.arange(len(names))
    for row, value, state in zip(data, shown["value"], shown["state"]):
        ax.plot(xs, row, color=cmap(norm(value)), lw=1.8, alpha=0.9,
                linestyle="--" if state == "PRUNED" else "-")
    for i, (low, high) in enumerate(ends):
        ax.axvline(i, color="black", lw=0.8)
        ax.text(i, -0.06, low, ha="center", va="top", fontsize="x-small")
        ax.text(i, 1.04, high, ha="center", va="bottom", fontsize="x-small")
    ax.set_xticks(xs, names, rotation=20, ha="right", rotation_mode="anchor", fontsize="small")
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    fig.colorbar(_scalar_mappable(norm, cmap), ax=ax, label=objective_label(frame))
    ax.set_title("parallel coordinates (dashed: pruned)")
    return fig


def trial_frames(frame: pd.DataFrame, histories: dict[int, pd.DataFrame] | None = None) -> pd.Series:
    """Frames each trial trained for: the last ``info/frames`` of its history, else the
    ``frames`` the trial recorded (complete and, since they record them, pruned trials), else NaN."""
    out = {}
    for number, recorded in zip(frame["number"], frame["frames"]):
        history = (histories or {}).get(number)
        if history is not None and STEP in history.columns and history[STEP].notna().any():
            out[number] = float(history[STEP].max())
        else:
            out[number] = float(recorded) if recorded is not None and not pd.isna(recorded) else math.nan
    return pd.Series(out, name="frames", dtype=float)


def pruning_efficiency(frame: pd.DataFrame, histories: dict[int, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Per trial state: trials, frames trained (known ones), share of all frames, mean frames."""
    frames = trial_frames(frame, histories)
    table = pd.DataFrame({"state": frame["state"].to_numpy(), "frames": frames.reindex(frame["number"]).to_numpy()})
    grouped = table.groupby("state").agg(trials=("state", "size"), frames=("frames", "sum"),
                                         mean_frames=("frames", "mean"))
    total = grouped["frames"].sum()
    grouped["share"] = grouped["frames"] / total if total > 0 else math.nan
    return grouped[["trials", "frames", "share", "mean_frames"]]


def plot_pruning_efficiency(frame: pd.DataFrame, histories: dict[int, pd.DataFrame] | None = None) -> Figure:
    """Frames spent per trial (coloured by state) and in total on pruned vs completed trials."""
    frames = trial_frames(frame, histories)
    if frames.dropna().empty:
        return message_figure("pruning efficiency", "no trial has a known frame count")
    fig, (per_trial, totals) = new_figure(2, ncols=2, width=5.5, height=3.6)
    states = dict(zip(frame["number"], frame["state"]))
    numbers = list(frames.index)
    per_trial.bar([str(n) for n in numbers], frames.fillna(0).to_numpy(),
                  color=[STATE_COLORS.get(states[n], "tab:gray") for n in numbers])
    per_trial.set_xlabel("trial")
    per_trial.set_ylabel("frames trained")
    # beside the axes, not over them: the tallest bars are often the first ones
    per_trial.legend(handles=[Line2D([], [], color=STATE_COLORS[s], lw=6, label=s.lower())
                              for s in sorted(set(states.values())) if s in STATE_COLORS], fontsize="x-small",
                     loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    per_trial.set_title("frames per trial")
    table = pruning_efficiency(frame, histories)
    bars = totals.bar(table.index, table["frames"], color=[STATE_COLORS.get(s, "tab:gray") for s in table.index])
    for bar, (state, row) in zip(bars, table.iterrows()):
        totals.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                    f"{row['share']:.0%}\n{int(row['trials'])} trials", ha="center", va="bottom", fontsize="small")
    totals.set_ylabel("frames (all trials)")
    totals.set_title("frames spent by trial state")
    totals.margins(y=0.25)
    return fig
