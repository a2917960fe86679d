"""Search-space grammar, conditions, storage resolution and budget counting (no processes)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from workbench.sweep.driver import budget_used
from workbench.sweep.errors import SweepConfigError
from workbench.sweep.factory import make_pruner, make_sampler
from workbench.sweep.objective import ObjectiveSettings, ObjectiveTracker
from workbench.sweep.space import format_value, parse_condition, parse_search_space
from workbench.sweep.storage import redact, resolve_storage


def dist(text: str):
    (spec,) = parse_search_space({"x": text}).params
    return spec.distribution


def test_grammar_maps_like_hydra_optuna_sweeper():
    assert dist("interval(0.1, 0.3)") == FloatDistribution(0.1, 0.3)
    assert dist("tag(log, interval(1e-5, 1e-2))") == FloatDistribution(1e-5, 1e-2, log=True)
    assert dist("tag(int, interval(1, 64))") == IntDistribution(1, 64)
    assert dist("range(1, 9, 2)") == IntDistribution(1, 9, step=2)  # b included, as hydra-optuna-sweeper
    assert dist("range(1, 5)") == IntDistribution(1, 5)
    assert dist("range(0.0, 1.0, 0.25)") == FloatDistribution(0.0, 1.0, step=0.25)
    assert dist("choice(true, false)") == CategoricalDistribution((True, False))
    assert dist("a,'b c',3") == CategoricalDistribution(("a", "b c", 3))
    assert dist("shuffle(range(1, 4))").choices and set(dist("shuffle(range(1, 4))").choices) == {1, 2, 3}


def test_fixed_values_pass_through_as_overrides():
    space = parse_search_space({"x": "interval(0, 1)", "env": "cartpole", "+extra.k": 3})
    assert space.overrides({"x": 0.5}) == ["x=0.5", "env=cartpole", "+extra.k=3"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"x": "interval(0.3, 0.1)"}, "low must be < high"),
        ({"x": "interval(0.2, 0.2)"}, "low must be < high"),
        ({"x": "tag(log, interval(0, 1))"}, "log scale needs low > 0"),
        ({"x": "interval(0.1"}, "cannot parse"),
        ({"x": "range(1, 5, -1)"}, "step must be > 0"),
    ],
)
def test_malformed_params_are_refused(params, message):
    with pytest.raises(SweepConfigError, match=message):
        parse_search_space(params)


def test_conditions_sample_only_active_params():
    space = parse_search_space(
        {"on": "choice(true, false)", "ema": "choice(true, false)", "alpha": "interval(0.01, 0.5)"},
        {"ema": "on == true", "alpha": "ema == true"},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(40):
        trial = study.ask()
        sampled = space.sample(trial)
        study.tell(trial, 0.0)
        seen.append(sampled)
        if not sampled["on"]:
            assert "ema" not in sampled and "alpha" not in sampled  # chains: inactive parent
        elif not sampled["ema"]:
            assert "alpha" not in sampled
        else:
            assert 0.01 <= sampled["alpha"] <= 0.5
        assert set(space.overrides(sampled)) == {f"{k}={format_value(v)}" for k, v in sampled.items()}
    assert any("alpha" in s for s in seen) and any("alpha" not in s for s in seen)


def test_condition_syntax_and_references():
    assert [c.op for c in parse_condition("t", "a == 1 and b != x and c in [1, 2]")] == ["==", "!=", "in"]
    with pytest.raises(SweepConfigError, match="cannot parse"):
        parse_condition("t", "a = 1")
    with pytest.raises(SweepConfigError, match="not a searched parameter"):
        parse_search_space({"a": "interval(0, 1)"}, {"a": "zz == 1"})
    with pytest.raises(SweepConfigError, match="listed before"):
        parse_search_space({"a": "interval(0, 1)", "b": "choice(1, 2)"}, {"a": "b == 1"})
    with pytest.raises(SweepConfigError, match="not a parameter"):
        parse_search_space({"a": "interval(0, 1)"}, {"nope": "a == 1"})


def test_format_value_round_trips_through_hydra_grammar():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in [0.1, 1e-7, -3, True, False, None, "a b", "it's", "sqlite:///x.db"]:
        (override,) = parser.parse_overrides([f"k={format_value(value)}"])
        assert override.value() == value


def test_sampler_and_pruner_targets():
    assert isinstance(make_sampler(None), optuna.samplers.TPESampler)
    assert isinstance(make_pruner({"_target_": "optuna.pruners.WilcoxonPruner", "p_threshold": 0.1}),
                      optuna.pruners.WilcoxonPruner)
    assert isinstance(make_pruner(None), optuna.pruners.NopPruner)
    with pytest.raises(SweepConfigError, match="cannot build 'optuna.pruners.NoSuchPruner'"):
        make_pruner({"_target_": "optuna.pruners.NoSuchPruner"})
    with pytest.raises(SweepConfigError, match="not an optuna BaseSampler"):
        make_sampler({"_target_": "collections.OrderedDict"})


def test_validation_points_cover_every_choice_and_both_ends():
    space = parse_search_space({"agent.batch_size": "choice(1024, 3000, 2048, 512)",
                                "agent.e_clip": "interval(0.1, 0.3)", "env": "pendulum"})
    points = space.validation_points()
    assert {p[0] for p in points} == {f"agent.batch_size={v}" for v in (1024, 3000, 2048, 512)}
    assert {p[1] for p in points} == {"agent.e_clip=0.1", "agent.e_clip=0.3"}
    assert all(p[2] == "env=pendulum" for p in points)


def test_sampler_missing_dependency_is_caught_before_any_trial(monkeypatch):
    import sys

    from workbench.sweep.factory import check_sampler

    monkeypatch.setitem(sys.modules, "cmaes", None)  # what `import cmaes` sees where it is not installed
    sampler = optuna.samplers.CmaEsSampler()  # builds fine: cmaes is imported only after the start-up trials
    with pytest.raises(SweepConfigError, match="CmaEsSampler needs the module 'cmaes'"):
        check_sampler(sampler, ["agent.e_clip"])
    check_sampler(optuna.samplers.TPESampler(), ["agent.e_clip"])


def test_grid_must_cover_the_searched_params():
    from workbench.sweep.factory import check_sampler

    grid = optuna.samplers.GridSampler({"agent.e_clip": [0.1, 0.2]})
    check_sampler(grid, ["agent.e_clip"])
    with pytest.raises(SweepConfigError, match="the grid has no values for agent.tau"):
        check_sampler(grid, ["agent.e_clip", "agent.tau"])


def test_wilcoxon_pruner_needs_per_seed_objectives():
    from workbench.sweep.factory import check_pruner

    wilcoxon = optuna.pruners.WilcoxonPruner()
    with pytest.raises(SweepConfigError, match="WilcoxonPruner needs per-seed objectives"):
        check_pruner(wilcoxon, None)
    with pytest.raises(SweepConfigError, match="WilcoxonPruner needs per-seed objectives"):
        check_pruner(optuna.pruners.PatientPruner(wilcoxon, patience=2), None)
    check_pruner(wilcoxon, (0, 1, 2))
    check_pruner(optuna.pruners.MedianPruner(), None)


def test_storage_resolution_and_redaction(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    spec = resolve_storage(None, "s1", tmp_path)
    assert spec.kind == "journal" and spec.path == tmp_path / "sweeps_db" / "s1.journal"
    assert resolve_storage("db/x.journal", "s1", tmp_path).path == tmp_path / "db" / "x.journal"
    url = "postgresql+psycopg://bob:s3cret@127.0.0.1:5432/optuna"
    monkeypatch.setenv("WORKBENCH_SWEEP_STORAGE", url)
    spec = resolve_storage(None, "s1", tmp_path)
    assert spec.kind == "rdb" and spec.dialect == "postgresql" and spec.path is None
    assert "s3cret" not in spec.redacted and "bob" in spec.redacted
    assert redact("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_summary_csv_sits_beside_a_storage_file_else_in_the_workers_sweep_dir(tmp_path: Path, monkeypatch):
    """One rule, read by the sweeper (from its Hydra config) and by `workbench sweep` (its workers' dir)."""
    from omegaconf import OmegaConf

    from hydra_plugins.workbench_optuna_sweeper.sweeper import _summary_path
    from workbench.sweep.cli import study_sweep_dir
    from workbench.sweep.summary import summary_csv_path

    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    hydra = OmegaConf.create({"hydra": {"sweep": {"dir": study_sweep_dir("s1")}, "runtime": {"cwd": str(tmp_path)}}})
    journal = resolve_storage(None, "s1", tmp_path)
    server = resolve_storage("postgresql+psycopg://bob@127.0.0.1:5432/optuna", "s1", tmp_path)
    sqlite = resolve_storage(f"sqlite:///{tmp_path}/db/s.db", "s1", tmp_path)
    assert summary_csv_path(journal.path, "s1", study_sweep_dir("s1"), tmp_path) == tmp_path / "sweeps_db" / "s1.summary.csv"
    assert summary_csv_path(sqlite.path, "s1", study_sweep_dir("s1"), tmp_path) == tmp_path / "db" / "s1.summary.csv"
    assert summary_csv_path(server.path, "s1", study_sweep_dir("s1"), tmp_path) == tmp_path / "multirun" / "s1" / "s1.summary.csv"
    assert summary_csv_path(None, "s1", tmp_path / "abs", Path("/elsewhere")) == tmp_path / "abs" / "s1.summary.csv"
    for spec in (journal, server, sqlite):
        assert _summary_path(spec, "s1", hydra) == summary_csv_path(spec.path, "s1", study_sweep_dir("s1"), tmp_path)


def _trial(number, state, **attrs):
    t = create_trial(state=state, value=1.0 if state == TrialState.COMPLETE else None, user_attrs=attrs)
    t.number = number
    return t


def test_budget_counts_everything_but_retried_failures_and_surplus():
    trials = [
        _trial(0, TrialState.COMPLETE),
        _trial(1, TrialState.FAIL),  # retried by 3: not counted
        _trial(2, TrialState.PRUNED),
        _trial(3, TrialState.WAITING, retry_of=1),
        _trial(4, TrialState.RUNNING),
        _trial(5, TrialState.FAIL, surplus=True),
        _trial(6, TrialState.FAIL),  # a plain failure counts
    ]
    assert budget_used(trials) == 5


def test_objective_is_mean_of_last_window():
    tracker = ObjectiveTracker(ObjectiveSettings(metric="eval/r", window=3, fallback_metric="info/r"))
    tracker.update({"info/r": float("nan")})
    assert tracker.value is None  # a NaN training return (no episode ended) is skipped
    tracker.update({"info/r": 5.0})
    assert tracker.value == 5.0 and tracker.metric_used == "info/r"
    for v in (1.0, 2.0, 3.0, 4.0):
        tracker.update({"eval/r": v, "info/r": 100.0})
    assert tracker.value == 3.0 and tracker.metric_used == "eval/r"
    with pytest.raises(SweepConfigError):
        ObjectiveSettings.from_config({"window": 0})


def test_the_sweeper_schema_is_made_of_the_settings_classes():
    """hydra.sweeper.objective/heartbeat/reevaluate are typed by the classes the sweep code reads:
    a value from a sweep file is checked by them and arrives in them, with no second declaration."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    from hydra_plugins.workbench_optuna_sweeper.config import WorkbenchOptunaSweeperConf
    from workbench.sweep.heartbeat import HeartbeatSettings
    from workbench.sweep.reevaluate import ReevalSettings

    schema = OmegaConf.structured(WorkbenchOptunaSweeperConf)
    conf = OmegaConf.merge(schema, {"objective": {"seeds": [3, 4], "window": 5, "metrics": ["a", "b"]},
                                    "heartbeat": {"interval": 2}, "reevaluate": {"top_k": 2}})
    for key, cls in (("objective", ObjectiveSettings), ("heartbeat", HeartbeatSettings), ("reevaluate", ReevalSettings)):
        assert OmegaConf.get_type(conf, key) is cls
        assert OmegaConf.to_container(schema[key]) == dataclasses.asdict(cls())  # the defaults are the class's
    objective = ObjectiveSettings.from_config(OmegaConf.to_container(conf.objective))
    assert (objective.seeds, objective.window, objective.metrics) == ((3, 4), 5, ["a", "b"])
    assert HeartbeatSettings(**OmegaConf.to_container(conf.heartbeat)) == HeartbeatSettings(interval=2.0)
    assert ReevalSettings.from_config(OmegaConf.to_container(conf.reevaluate)).top_k == 2
    with pytest.raises(ValidationError):
        OmegaConf.merge(schema, {"objective": {"seeds": ["x"]}})


def _driver(n_trials: int, grace: float = 60.0):
    from workbench.sweep.driver import HeartbeatSettings, StudyDriver
    from workbench.sweep.storage import StorageSpec

    study = optuna.create_study(direction="maximize")
    space = parse_search_space({"x": "interval(0, 1)"})
    # a database without a budget lock (no local file, not PostgreSQL)
    spec = StorageSpec("mysql+pymysql://u@h/db", "rdb")
    return study, StudyDriver(study, spec, space, n_trials, HeartbeatSettings(0.1, grace, 1), say=lambda s: None)


def test_stale_trial_is_failed_once_and_retried_with_same_params():
    import time

    from workbench.sweep.heartbeat import HEARTBEAT_KEY, reap_stale_trials

    study, driver = _driver(3)
    trial, sampled = driver.reserve()
    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_KEY, time.time() - 120)
    assert reap_stale_trials(study, 60.0, max_retry=1) == [trial.number]
    assert reap_stale_trials(study, 60.0, max_retry=1) == []  # already failed: nothing twice
    failed = study.trials[trial.number]
    assert failed.state == TrialState.FAIL and "heartbeat lost" in failed.user_attrs["fail_reason"]
    retry, resampled = driver.reserve()  # the queued retry comes first, with the same params
    assert resampled == sampled and retry.user_attrs["retry_of"] == trial.number
    assert budget_used(study.get_trials()) == 1


def test_overshoot_without_lock_is_marked_surplus():
    study, driver = _driver(2)
    first, _ = driver.reserve()
    second, _ = driver.reserve()
    assert driver.reserve() is None  # budget spent: nothing asked
    late = study.ask()  # as if a concurrent worker had asked after counting
    assert driver._is_surplus(late)
    frozen = study.trials[late.number]
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["surplus"] is True
    assert budget_used(study.get_trials()) == 2
