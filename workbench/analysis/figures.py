"""Figure plumbing shared by the plots: Agg figures without pyplot (no global state, no GUI)."""
from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STATE_COLORS = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAIL": "tab:red", "RUNNING": "tab:gray",
                "WAITING": "tab:gray"}


def new_figure(n_axes: int = 1, ncols: int = 3, width: float = 4.2, height: float = 3.2):
    """A figure with ``n_axes`` axes in a grid; returns (figure, flat list of axes)."""
    n_axes = max(1, n_axes)
    ncols = min(ncols, n_axes)
    nrows = math.ceil(n_axes / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas: savefig/print work anywhere, headless
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for extra in axes[n_axes:]:
        extra.set_visible(False)
    return fig, axes[:n_axes]


def message_figure(title: str, message: str) -> Figure:
    """What a plot shows when there is nothing to draw: says why instead of raising."""
    fig, (ax,) = new_figure(1, width=6.0, height=2.0)
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    fig.workbench_message = message  # lets callers (and tests) tell an empty plot apart
    return fig


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_data_uri(fig: Figure, dpi: int = 90) -> str:
    return "data:image/png;base64," + base64.b64encode(figure_png(fig, dpi)).decode("ascii")


def short_key(key: str, width: int = 28) -> str:
    """Axis labels: long parameter names keep their informative tail."""
    return key if len(key) <= width else "…" + key[-(width - 1):]


def readable_log_axis(ax, axis: str = "x") -> None:
    """A log scale labelled in plain numbers at 1, 2 and 5 of each decade: a search range
    within one decade otherwise gets only minor ticks written as 10^x powers, or none."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())
