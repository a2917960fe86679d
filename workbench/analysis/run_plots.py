"""Plots and tables of one training run's history (the run diagnostics notebook)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from workbench.tracking import RunData, read_run

from ..metric_names import EVAL, INFO
from .figures import message_figure, new_figure, short_key
from .histories import STEP
from .latest import latest_run

# sections of the run diagnostics; an entry is a key, or a list of keys drawn on one axes
RUN_PANELS: dict[str, list[str | list[str]]] = {
    "losses": ["losses/actor_loss", "losses/critic_loss", "actor/entropy"],
    "clipping": ["actor/clip_frac", "critic/value_clip_frac", "actor/approx_kl"],
    "grad_norms": [["actor/grad_norm_before_clip", "actor/grad_norm_after_clip"],
                   ["critic/grad_norm_before_clip", "critic/grad_norm_after_clip"]],
    "adv_norm": ["adv_norm/raw_mean", "adv_norm/raw_std", "adv_norm/clamp_frac",
                 ["adv_norm/mean_ema", "adv_norm/std_ema"]],
    "evaluation": [[EVAL.episode_reward, INFO.episode_reward], "info/episode_length",
                   "critic/explained_variance"],
}


def load_run(path: str | Path | None = None) -> RunData:
    """A local W&B run (a run dir, a Hydra output dir or a ``.wandb`` file); None: the latest."""
    return read_run(latest_run() if path is None else path)


def _last(history: pd.DataFrame, key: str) -> float:
    if key not in history.columns:
        return math.nan
    values = history[key].dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def run_summary(run: RunData) -> pd.DataFrame:
    """A one-column table: who the run is and where it ended."""
    history = run.history
    rows = {
        "run id": run.run_id, "group": run.group, "job type": run.job_type, "state": run.state,
        "iterations": len(history), "frames": _last(history, STEP),
        "final eval return": _last(history, EVAL.episode_reward),
        "best eval return": history[EVAL.episode_reward].max() if EVAL.episode_reward in history else math.nan,
        "final train return": _last(history, INFO.episode_reward),
        "e_clip": (run.config.get("agent") or {}).get("e_clip"),
        "tau": (run.config.get("agent") or {}).get("tau"),
        "path": str(run.run_dir),
    }
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


def plot_metrics(history: pd.DataFrame, panels: Sequence[str | Sequence[str]], x: str = STEP,
                 title: str | None = None) -> Figure:
    """One axes per panel (a key, or keys drawn together); keys the run did not log are
    listed in the title rather than drawn empty."""
    groups = [[p] if isinstance(p, str) else list(p) for p in panels]
    present = [[k for k in g if k in history.columns and history[k].notna().any()] for g in groups]
    absent = [k for g in groups for k in g if k not in history.columns or not history[k].notna().any()]
    present = [g for g in present if g]
    if not present:
        return message_figure(title or "metrics", f"not logged by this run: {', '.join(absent)}")
    fig, axes = new_figure(len(present))
    xs_all = history[x] if x in history.columns else pd.Series(history.index, index=history.index)
    for ax, keys in zip(axes, present):
        for key in keys:
            series = history[key]
            mask = series.notna()  # eval/* are logged only on evaluation iterations
            ax.plot(xs_all[mask], series[mask], marker="o" if mask.sum() < 12 else None, ms=3, label=key)
        ax.set_title(short_key(keys[0], 40) if len(keys) == 1 else " / ".join(k.split("/")[-1] for k in keys),
                     fontsize="medium")
        ax.set_xlabel(x)
        if len(keys) > 1:
            ax.legend(fontsize="x-small")
    suptitle = title or ""
    if absent:
        suptitle += f"\n(not logged: {', '.join(absent)})"
    if suptitle:
        fig.suptitle(suptitle, fontsize="medium")
    return fig


def plot_run_section(history: pd.DataFrame, section: str, x: str = STEP) -> Figure:
    """One of ``RUN_PANELS``: losses, clipping, grad_norms, adv_norm, evaluation."""
    if section not in RUN_PANELS:
        raise KeyError(f"unknown section {section!r}; one of {', '.join(RUN_PANELS)}")
    return plot_metrics(history, RUN_PANELS[section], x=x, title=section.replace("_", " "))


def plot_grad_layers(history: pd.DataFrame, network: str = "actor", x: str = STEP) -> Figure:
    """Per-layer gradient norms (``grad_layers/<network>/*``, logged with check_grad_mag=true)."""
    prefix = f"grad_layers/{network}/"
    keys = sorted(k for k in history.columns if k.startswith(prefix))
    if not keys:
        return message_figure(f"{network} per-layer gradient norms",
                              "not logged (train with agent.check_grad_mag=true)")
    fig, (ax,) = new_figure(1, width=8.0, height=4.0)
    xs = history[x] if x in history.columns else history.index
    for key in keys:
        ax.plot(xs, history[key], label=key[len(prefix):])
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_title(f"{network} per-layer gradient norms (before clipping)")
    ax.legend(fontsize="x-small", ncols=2)
    return fig
