"""Re-evaluation on fresh seeds: the statistics (CI against an independent bootstrap), the
record and CSV with the fake app, `workbench reevaluate` on demand, and one tiny real study."""
from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.sweep.errors import SweepConfigError
from workbench.testing.fake_sweep.harness import open_study, run, sweep_cli_cmd, write_sweep
from workbench.sweep.reevaluate import ReevalSettings, bootstrap_ci, config_stats, fresh_seeds


def loop_bootstrap(values, resamples, seed):
    """An independent percentile bootstrap of the mean: plain Python, random.choices."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def test_bootstrap_ci_matches_an_independent_computation():
    values = [-160.0, -120.5, -210.0, -140.0, -175.25]
    low, high = bootstrap_ci(values)
    ref_low, ref_high = loop_bootstrap(values, 20_000, 1)
    spread = max(values) - min(values)
    assert low == pytest.approx(ref_low, abs=0.02 * spread) and high == pytest.approx(ref_high, abs=0.02 * spread)
    from scipy.stats import bootstrap
    scipy_ci = bootstrap((np.array(values),), np.mean, n_resamples=10_000, method="percentile",
                         random_state=np.random.default_rng(3)).confidence_interval
    assert low == pytest.approx(scipy_ci.low, abs=0.02 * spread)
    assert high == pytest.approx(scipy_ci.high, abs=0.02 * spread)
    assert bootstrap_ci(values) == (low, high)  # fixed RNG seed: reproducible
    stats = config_stats(values)
    assert stats["mean"] == pytest.approx(np.mean(values)) and stats["iqm"] == pytest.approx(-158.41666, rel=1e-5)


def test_settings_and_fresh_seeds():
    assert ReevalSettings.from_config({"top_k": 2, "seeds": 3}).budget is None
    with pytest.raises(SweepConfigError, match=r"reevaluate.seeds=0 is not allowed: must be >= 1"):
        ReevalSettings.from_config({"top_k": 2, "seeds": 0})
    seeds = [fresh_seeds(j, 3) for j in range(3)]
    assert seeds[0] == [10_000, 10_001, 10_002] and len({s for g in seeds for s in g}) == 9


def reeval_rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_end_of_sweep_reevaluation_is_stored_printed_and_rerun_on_demand(tmp_path: Path):
    reevaluate = {"top_k": 2, "seeds": 3, "budget": 8 * 8 * 32, "baseline": True}
    write_sweep(tmp_path, "re", {"n_trials": 5, "reevaluate": reevaluate, "pruner": None})
    done = run(sweep_cli_cmd(tmp_path, "re", ["--workers", "2"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = open_study(tmp_path, "re")
    record = study.user_attrs["reevaluation"]
    rows = record["rows"]
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE" and not t.user_attrs.get("baseline")),
                      key=lambda t: -t.value)
    assert [r["trial"] for r in rows] == [complete[0].number, complete[1].number, 0]
    assert [r["baseline"] for r in rows] == [False, False, True] and record["one_population"]
    used = [s for r in rows for s in r["seeds"]]
    assert len(set(used)) == 9 and min(used) >= 10_000  # never the search's seed 0
    for row in rows:
        assert row["mean"] == pytest.approx(np.mean(row["values"]))
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
        assert row["params"] == study.trials[row["trial"]].params
    assert record["winner"] == max(rows[:2], key=lambda r: r["mean"])["trial"]
    winner = next(r for r in rows if r["trial"] == record["winner"])
    assert record["winner_clears_baseline"] == (winner["ci_low"] > rows[2]["ci_high"])
    assert "re-evaluation: 3 configs x 3 fresh seeds" in done.stdout and "winner on fresh seeds" in done.stdout
    csv_rows = reeval_rows(tmp_path / "sweeps_db" / "re.reeval.csv")
    assert [int(r["trial"]) for r in csv_rows] == [r["trial"] for r in rows]
    assert [r["baseline"] for r in csv_rows] == ["False", "False", "True"]
    assert json.loads(csv_rows[0]["values"]) == rows[0]["values"]
    assert float(csv_rows[0]["search_value"]) == pytest.approx(study.trials[rows[0]["trial"]].value)

    again = run([sys.executable, "-m", "workbench.cli", "reevaluate", "re", "--top-k", "1", "--seeds", "2",
                 "--app", "workbench.testing.fake_sweep"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = open_study(tmp_path, "re").user_attrs["reevaluation"]["rows"]
    assert [len(r["values"]) for r in rows] == [2, 2] and rows[1]["baseline"]
    assert len(reeval_rows(tmp_path / "sweeps_db" / "re.reeval.csv")) == 2


def test_reevaluate_refuses_bad_input_in_one_line(tmp_path: Path):
    bad = run([sys.executable, "-m", "workbench.cli", "reevaluate", "nosuch", "--seeds", "0"], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "--seeds=0 is not allowed: must be >= 1" in bad.stderr
    missing = run([sys.executable, "-m", "workbench.cli", "reevaluate", "nosuch"], cwd=tmp_path)
    assert missing.returncode == 2 and "no study storage at" in missing.stderr


def test_report_and_table_show_the_reevaluation(tmp_path: Path):
    from sweep_fixture import fake_study

    from workbench import analysis as wa
    from workbench.sweep.reevaluate import build_record

    journal = tmp_path / "sweeps_db" / "fake.journal"
    study = fake_study(journal)
    configs = [study.trials[0], study.trials[1]]
    configs[1].user_attrs["baseline"] = True  # trial 1 plays the defaults (a frozen copy, not stored)
    record = build_record(study, configs, [[-100.0, -110.0, -105.0], [-300.0, -310.0, -290.0]],
                          [[10_000, 10_001, 10_002], [10_003, 10_004, 10_005]], 4096, [])
    assert record["winner"] == 0 and record["winner_clears_baseline"] is True
    study.set_user_attr("reevaluation", record)
    frame = wa.load_study(journal, "fake")
    table = wa.reevaluation_table(frame)
    assert list(table["trial"]) == [0, 1] and list(table["search_value"]) == [-150.0, -250.0]
    assert list(table["mean"]) == pytest.approx([-105.0, -300.0])
    assert "winner on fresh seeds: trial 0" in wa.reevaluation_verdict(frame)
    assert "clears the defaults'" in wa.reevaluation_verdict(frame)
    page = wa.write_html_report(journal, "fake", base_dir=tmp_path, histories=wa.Histories()).path.read_text()
    assert "Re-evaluation on fresh seeds" in page and "winner on fresh seeds: trial 0" in page


@pytest.mark.slow
def test_real_tiny_study_reevaluated_at_the_end_and_on_demand(tmp_path: Path):
    from sweep_fixture import OVERRIDES, sweep_env

    env = sweep_env(tmp_path)
    tiny = [o for o in OVERRIDES if "pruner" not in o] + ["hydra.sweeper.pruner=null",
                                                           "hydra.sweeper.reevaluate.top_k=1",
                                                           "hydra.sweeper.reevaluate.seeds=2",
                                                           "hydra.sweeper.reevaluate.budget=8192"]
    cmd = [sys.executable, "-m", "workbench.cli", "sweep", "smoke", "--n-trials", "2", "--study-name", "tiny", *tiny]
    import subprocess
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "re-evaluation: 2 configs x 2 fresh seeds, 8192 frames each" in done.stdout
    study = open_study(tmp_path, "tiny")
    record = study.user_attrs["reevaluation"]
    assert record["one_population"] and [r["baseline"] for r in record["rows"]] == [False, True]
    members = sorted((tmp_path / "multirun" / "tiny" / "reeval_0").glob("member_*"))
    assert len(members) == 4  # 2 configs x 2 seeds, one population
    again = subprocess.run([sys.executable, "-m", "workbench.cli", "reevaluate", "tiny", "--seeds", "2",
                            "--budget", "4096"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    record = open_study(tmp_path, "tiny").user_attrs["reevaluation"]
    assert record["budget"] == 4096 and all(len(r["values"]) == 2 for r in record["rows"])
    assert (tmp_path / "sweeps_db" / "tiny.reeval.csv").is_file()


def test_dry_run_finds_the_configs_own_budget_with_sweeper_overrides_on_the_command_line(tmp_path: Path):
    """budget: null composes the config without the sweep file; the command line's
    hydra.sweeper.* overrides (which `workbench sweep` always passes) must not break that."""
    import subprocess

    from sweep_fixture import sweep_env

    cmd = [sys.executable, "-m", "workbench.cli", "train", "-m", "+sweep=ppo_knobs", "hydra.sweeper.dry_run=true",
           "hydra.sweeper.study_name=own-budget", "hydra.sweeper.print_summary=false",
           "agent.training_max_steps=65536"]  # the sweep's own (shortened) budget: not the re-evaluation's
    done = subprocess.run(cmd, cwd=tmp_path, env=sweep_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fresh seeds each, 2000000 frames" in done.stdout  # conf/tuning/pendulum.yaml's training_max_steps
