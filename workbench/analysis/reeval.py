"""A study's re-evaluation on fresh seeds (``study.user_attrs["reevaluation"]``) as a table."""
from __future__ import annotations

import pandas as pd

from ..sweep.reevaluate import verdict


def reevaluation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per re-evaluated config: its search value beside its fresh-seed mean, IQM and CI
    (the winner's curse in one glance); empty when the study was not re-evaluated."""
    record = frame.attrs.get("reevaluation")
    if not record:
        return pd.DataFrame(columns=["trial", "baseline", "winner", "search_value", "mean", "iqm",
                                     "ci_low", "ci_high", "values"])
    rows = [{"trial": r["trial"], "baseline": r["baseline"], "winner": r["trial"] == record["winner"],
             "search_value": r["search_value"], "mean": r["mean"], "iqm": r["iqm"], "ci_low": r["ci_low"],
             "ci_high": r["ci_high"], "values": ", ".join(f"{v:.4g}" for v in r["values"]),
             **_objective_columns(record, r), **{f"params_{k}": v for k, v in r["params"].items()}}
            for r in record["rows"]]
    return pd.DataFrame(rows)


def _objective_columns(record: dict, row: dict) -> dict:
    """A multi-objective study's: each objective's search value and fresh mean, and whether the
    config stays on the Pareto front on fresh seeds."""
    if "fresh_front" not in record:
        return {}
    out = {"on_fresh_front": row["trial"] in record["fresh_front"]}
    for metric, stats in row["objectives"].items():
        out[f"search {metric}"] = stats["search_value"]
        out[f"fresh {metric}"] = stats["mean"] if stats["remeasured"] else None
    return out


def reevaluation_verdict(frame: pd.DataFrame) -> str:
    """The winner and whether its CI clears the defaults' (one sentence), or why there is none."""
    record = frame.attrs.get("reevaluation")
    if not record:
        return "no re-evaluation on fresh seeds yet: `workbench reevaluate <study>` runs one"
    return verdict(record) + f" ({record['budget']} frames per run)"
