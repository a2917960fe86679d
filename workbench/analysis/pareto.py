"""The Pareto front of a multi-objective study: a table and a plot, from the study DataFrame."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from .figures import STATE_COLORS, message_figure, new_figure
from .study import VALUES_PREFIX, best_and_worst, param_columns, param_name


def is_multi_objective(frame: pd.DataFrame) -> bool:
    return len(frame.attrs.get("directions") or []) > 1


def _value_columns(frame: pd.DataFrame) -> dict[str, str]:
    """Frame column -> objective label, e.g. values_1 -> 'time/wall_seconds (minimize)'."""
    names, directions = frame.attrs["objective_metrics"], frame.attrs["directions"]
    return {f"{VALUES_PREFIX}{i}": f"{n} ({d})" for i, (n, d) in enumerate(zip(names, directions))}


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials on the front (no other complete trial is at least as good in every objective
    and better in one), best first by the first objective, one column per objective and the
    params. A single-objective study's front is its best trial."""
    if not is_multi_objective(frame):
        best, _ = best_and_worst(frame)
        rows = frame[frame["number"] == best] if best is not None else frame.iloc[0:0]
        return rows[["number", "value", *param_columns(frame)]].rename(
            columns={c: param_name(c) for c in param_columns(frame)}).reset_index(drop=True)
    labels = _value_columns(frame)
    front = frame[frame["pareto"]].sort_values(
        ["values_0", "number"], ascending=[frame.attrs["directions"][0] == "minimize", True])
    table = front[["number", *labels, *param_columns(frame)]]
    return table.rename(columns={**labels, **{c: param_name(c) for c in param_columns(frame)}}).reset_index(drop=True)


def plot_pareto_front(frame: pd.DataFrame) -> Figure:
    """The first two objectives of every complete trial; the front highlighted, joined and
    labelled with trial numbers."""
    title = "Pareto front"
    if not is_multi_objective(frame):
        return message_figure(title, "single-objective study: no front to draw (its best trial is the front)")
    done = frame[(frame["state"] == "COMPLETE") & frame["values_0"].notna() & frame["values_1"].notna()]
    if done.empty:
        return message_figure(title, "no complete trial yet")
    labels = list(_value_columns(frame).values())
    fig, (ax,) = new_figure(1, width=6.0, height=4.5)
    ax.scatter(done["values_0"], done["values_1"], color="lightgray", edgecolor=STATE_COLORS["COMPLETE"],
               label="complete trials")
    front = done[done["pareto"]].sort_values("values_0")
    style = "o-" if len(labels) == 2 else "o"  # with more objectives the projected front is no line
    ax.plot(front["values_0"], front["values_1"], style, color="tab:red", label="Pareto front")
    for row in front.itertuples():
        ax.annotate(str(row.number), (row.values_0, row.values_1), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    shown = "" if len(labels) == 2 else f" (first two of {len(labels)} objectives)"
    ax.set_title(f"{title}: {len(front)} of {len(done)} complete trials{shown}")
    ax.legend()
    return fig
