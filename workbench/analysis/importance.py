"""Parameter importances with ``optuna.importance``, computed from a study DataFrame."""
from __future__ import annotations

import math

import optuna
import pandas as pd
from optuna.distributions import json_to_distribution

from .study import PARAM_PREFIX

MIN_COMPLETE = 2


def _evaluator():
    """fANOVA (Optuna's default) needs scikit-learn; PED-ANOVA does not."""
    try:
        import sklearn  # noqa: F401

        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator()


def _as_study(frame: pd.DataFrame) -> optuna.Study:
    """An in-memory study holding the frame's COMPLETE trials (so filtered frames work too)."""
    distributions = {k: json_to_distribution(v) for k, v in frame.attrs.get("distributions", {}).items()}
    study = optuna.create_study(direction=frame.attrs.get("direction", "maximize"))
    for _, row in frame.iterrows():
        if row["state"] != "COMPLETE" or not math.isfinite(row["value"]):
            continue
        params = {}
        for name in distributions:
            value = row.get(PARAM_PREFIX + name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                params[name] = value.item() if hasattr(value, "item") else value
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={n: distributions[n] for n in params}, value=float(row["value"])))
    return study


def param_importances(frame: pd.DataFrame) -> pd.Series:
    """Normalised importance per parameter (largest first). Empty, with ``attrs["reason"]``,
    when it cannot be computed (fewer than 2 complete trials, no parameter common to all)."""
    empty = pd.Series(dtype=float, name="importance")
    done = frame[(frame["state"] == "COMPLETE") & frame["value"].notna()]
    if len(done) < MIN_COMPLETE:
        empty.attrs["reason"] = f"needs at least {MIN_COMPLETE} complete trials (has {len(done)})"
        return empty
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory"
    try:
        values = optuna.importance.get_param_importances(_as_study(frame), evaluator=_evaluator())
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        empty.attrs["reason"] = f"optuna.importance failed: {exc}"
        return empty
    if not values:
        empty.attrs["reason"] = "no parameter was sampled in every complete trial"
        return empty
    series = pd.Series(values, name="importance", dtype=float).sort_values(ascending=False)
    return series
