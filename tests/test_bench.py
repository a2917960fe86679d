"""Smoke tests for the benchmark runner (bench/): each trainer trains a few hundred steps.

Peers are optional (the ``bench`` extra); their tests skip when the peer is not installed.
No wall-clock assertions: only that each implementation trains and counts its steps.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from bench.compute_bound import layer_dims, mlp_train_flops, update_flops
from bench.workloads import HALFCHEETAH_CLEANRL, PENDULUM_BATCHED, WORKLOADS

TINY_PENDULUM = replace(PENDULUM_BATCHED, num_envs=64, num_steps=8, epochs=2, minibatches=4)
TINY_CHEETAH = replace(HALFCHEETAH_CLEANRL, num_steps=128, epochs=2, minibatches=4)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_workloads_split_the_rollout_into_whole_minibatches():
    for w in WORKLOADS.values():
        assert w.minibatch_size * w.minibatches == w.steps_per_iteration
    assert HALFCHEETAH_CLEANRL.minibatch_size == 64  # CleanRL: 2048 steps / 32 minibatches


def test_flop_count_matches_hand_count():
    # 2 -> 3 -> 1 with batch 4: forward 2*4*(2*3 + 3*1) = 72, weight grads 72, input grad (2nd layer only) 24
    assert mlp_train_flops(4, layer_dims(2, 1, (3,))) == 72 + 72 + 24
    w = replace(PENDULUM_BATCHED, hidden=(3,), num_envs=4, num_steps=1, epochs=1, minibatches=1)
    assert update_flops(w, obs_dim=2, action_dim=1) == 2 * (72 + 72 + 24)


def _train(name, workload):
    from bench.peers import make_trainer
    trainer = make_trainer(name, workload, seed=0)
    try:
        trainer.iterate(2)
        assert trainer.steps >= 2 * workload.steps_per_iteration
    finally:
        trainer.close()


def test_ours_trains_on_the_pendulum_workload():
    _train("ours", TINY_PENDULUM)


@pytest.mark.parametrize("peer,module", [("torchrl", "torchrl"), ("rsl_rl", "rsl_rl")])
def test_batched_peers_train_on_the_pendulum_workload(peer, module):
    pytest.importorskip(module)
    _train(peer, TINY_PENDULUM)


@pytest.mark.parametrize("name,module", [("ours", None), ("sb3", "stable_baselines3"), ("rsl_rl", "rsl_rl"),
                                         ("torchrl", "torchrl")])
def test_trainers_run_halfcheetah(name, module):
    pytest.importorskip("mujoco")
    if module:
        pytest.importorskip(module)
    _train(name, TINY_CHEETAH)


def test_runner_reports_per_round_ratios(tmp_path):
    from bench.runner import run_workload
    result = run_workload(TINY_PENDULUM, ["rsl_rl", "torchrl"], rounds=2, iterations=1, log=lambda *_: None)
    ours = result["implementations"]["ours"]["sps_per_round"]
    assert len(ours) == 2 and all(s > 0 for s in ours)
    for name, imp in result["implementations"].items():
        if name == "ours":
            continue
        expected = [o / p for o, p in zip(ours, imp["sps_per_round"])]
        assert imp["ratio_ours_over_peer_per_round"] == pytest.approx(expected)
    json.dumps(result)  # results are written as JSON


def test_report_builds_from_results(tmp_path, monkeypatch):
    from bench import report
    run = {"workload": "pendulum_1024", "description": "d", "settings": {
        "num_envs": 1, "num_steps": 2, "epochs": 1, "minibatches": 1, "minibatch_size": 2, "hidden": [4],
        "activation": "tanh", "lr": 1e-3, "gamma": 0.99, "lambda": 0.95, "clip": 0.2, "grad_clip": 1.0,
        "learnable_std": False, "init_logstd": -0.5, "normalize_obs": True},
        "rounds": 1, "iterations_per_round": 1, "steps_per_round": 2, "skipped": [], "command": "python -m bench",
        "implementations": {"ours": {"sps_median": 3.0, "sps_min": 3.0, "sps_max": 3.0},
                            "rsl_rl": {"sps_median": 1.0, "sps_min": 1.0, "sps_max": 1.0,
                                       "ratio_ours_over_peer_median": 3.0}},
        "fastest_peer": "rsl_rl", "ratio_vs_fastest_peer": 3.0}
    (tmp_path / "throughput_pendulum_1024.json").write_text(json.dumps(run))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.build()
    assert "| rsl_rl | 1 | 1 - 1 | 3.00 |" in text  # wall figures; CPU ones absent here
    assert "**3.00x**, meets the 1.5x target" in text


def _frozen(number, start, end):
    import datetime

    import optuna
    t0 = datetime.datetime(2026, 1, 1)
    return optuna.trial.FrozenTrial(
        number=number, state=optuna.trial.TrialState.COMPLETE, value=0.0, values=None,
        datetime_start=t0 + datetime.timedelta(seconds=start), datetime_complete=t0 + datetime.timedelta(seconds=end),
        params={}, distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=number)


def test_sweep_trials_rates_ratios_and_section(tmp_path, monkeypatch):
    """bench.sweep_trials' arithmetic on made-up trials: trials/hour over the span, the within-round
    ratios and their medians, the 5-seed cost; the section is replaced, not appended twice."""
    import datetime

    from bench import population, sweep_trials
    t0 = datetime.datetime(2026, 1, 1).timestamp()
    run = sweep_trials.summarise([_frozen(0, 10, 20), _frozen(1, 11, 30)], t0, t0 + 40, cpu=8.0)
    assert run["span_s"] == pytest.approx(20.0) and run["trials_per_hour_span"] == pytest.approx(360.0)
    assert run["trials_per_hour_wall"] == pytest.approx(180.0) and run["cpu_s_per_trial"] == pytest.approx(4.0)
    assert run["trial_duration_s_median"] == pytest.approx(14.5) and run["first_trial_start_after_s"] == pytest.approx(10)

    def mode(rate, cpu, duration):
        return {"trials_per_hour_span": rate, "trials_per_hour_wall": rate / 2, "trials_per_cpu_hour": 3600 / cpu,
                "cpu_s_per_trial": cpu, "trial_duration_s_median": duration, "command_wall_s": 1.0,
                "span_cpu_s_per_trial": cpu / 2, "trials_per_span_cpu_hour": 7200 / cpu, "span_cores_used": 1.5}

    sweep = {"modes": ["population_4", "one_per_process", "sb3", "seeds5"], "trials": 8, "seed_trials": 4,
             "settings": {"description": "d", "iterations": 2, "steps_per_trial": 4096, "overrides": ["a=1"]},
             "rounds": [{"population_4": mode(400, 2, 10), "one_per_process": mode(100, 8, 5),
                         "sb3": mode(200, 4, 4), "seeds5": mode(60, 10, 6)},
                        {"population_4": mode(300, 2, 10), "one_per_process": mode(100, 8, 5),
                         "sb3": mode(100, 4, 4), "seeds5": mode(50, 12, 7)}]}
    sweep_trials.derive(sweep)
    r = sweep["ratios"]["population_4_over_one_per_process"]
    assert r["span_per_round"] == pytest.approx([4.0, 3.0]) and r["span_median"] == pytest.approx(3.5)
    assert r["cpu_median"] == pytest.approx(4.0)
    assert sweep["ratios"]["population_4_over_sb3"]["span_per_round"] == pytest.approx([2.0, 3.0])
    assert sweep["seed_cost"]["duration_ratio_per_round"] == pytest.approx([1.2, 1.4])
    assert sweep["seed_cost"]["cpu_ratio_median"] == pytest.approx(1.375)
    assert sweep["seed_cost"]["span_cpu_ratio_per_round"] == pytest.approx([1.25, 1.5])
    assert sweep["ratios"]["population_4_over_sb3"]["span_cpu_median"] == pytest.approx(2.0)
    result = {"machine": {"cpu_model": "cpu", "nproc": 2}, "load_average_at_start": [1.0, 1.0, 1.0],
              "load_average_at_end": [1.0, 1.0, 1.0], "command": "python -m bench.sweep_trials", "total_wall_s": 60.0,
              "sweeps": {"halfcheetah": sweep}, "notes": ["a note"]}
    text = sweep_trials.markdown_section(result)
    assert "## Sweep throughput" in text and "**3.50x** (4.00, 3.00)" in text and "**1.38x**" in text
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text("# Benchmarks\n\nbefore\n")
    monkeypatch.setattr(population, "BENCHMARKS", bench_md)
    path = tmp_path / "sweep_trials.json"
    path.write_text(json.dumps(result))
    for _ in range(2):  # --report twice: one section
        sweep_trials.main(["--report", "--out", str(path)])
    written = bench_md.read_text()
    assert written.count(sweep_trials.SECTION_BEGIN) == 1 and written.startswith("# Benchmarks\n\nbefore\n")


def test_sweep_trials_iterations_set_each_trials_budget():
    """--iterations N: N iterations' env steps per trial on either sweep; a budget under 1 is refused."""
    from bench import sweep_trials

    def budget(settings):
        (steps,) = [o.split("=")[1] for o in settings["overrides"] if o.startswith("agent.training_max_steps=")]
        return int(steps)

    for name, per_iteration in (("halfcheetah", 2048), ("ppo_knobs", 1024 * 32)):
        default, longer = sweep_trials.sweep_settings(name, False), sweep_trials.sweep_settings(name, False, 20)
        assert longer["iterations"] == 20 and budget(longer) == longer["steps_per_trial"] == 20 * per_iteration
        assert budget(default) == default["iterations"] * per_iteration and default["iterations"] in (2, 3)
    with pytest.raises(ValueError, match="iterations=0"):
        sweep_trials.sweep_settings("halfcheetah", False, 0)
    with pytest.raises(SystemExit):
        sweep_trials.main(["--iterations", "0", "--sweeps", "halfcheetah"])


def test_sweep_trials_iteration_cost_times_both_agents_in_turn(tmp_path):
    """--iteration-cost: a 1-seed and a 5-seed agent, each iteration's rollout and update inside its
    own CPU time, the ratios those of the rounds' figures, and the evaluations."""
    pytest.importorskip("mujoco")
    from bench import sweep_trials
    out = tmp_path / "iteration_cost.json"
    result = sweep_trials.main(["--iteration-cost", "--quick", "--rounds", "2", "--out", str(out)])
    assert json.loads(out.read_text())["ratio_median"] == result["ratio_median"]
    assert len(result["per_round"]) == 2
    for r in result["per_round"]:
        for size in ("seeds_1", "seeds_5"):
            c = r[size]
            assert 0 < c["collect"] and 0 < c["update"] and c["collect"] + c["update"] <= c["iteration"] + 1e-3
        assert r["ratio"]["iteration"] == pytest.approx(r["seeds_5"]["iteration"] / r["seeds_1"]["iteration"])
    assert result["ratio_median"]["iteration"] == pytest.approx(
        sum(r["ratio"]["iteration"] for r in result["per_round"]) / 2)  # the median of two
    assert result["evaluation_ratio"] == pytest.approx(result["evaluation_s"]["seeds_5"] / result["evaluation_s"]["seeds_1"])


@pytest.mark.slow
def test_sweep_trials_quick_runs_every_mode(tmp_path):
    """``python -m bench.sweep_trials --quick``: every mode of both sweeps runs its trials to the end
    and the result has the figures the section is made of (structure only, no timing values)."""
    pytest.importorskip("mujoco")
    from bench import sweep_trials
    from bench.peers import available
    out = tmp_path / "quick.json"
    result = sweep_trials.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["sweeps"].keys() == {"halfcheetah", "ppo_knobs"}
    sb3 = ["sb3"] if available("sb3") else []
    assert result["sweeps"]["halfcheetah"]["modes"] == ["population_2", "one_per_process", *sb3, "seeds5"]
    assert result["sweeps"]["ppo_knobs"]["modes"] == ["population_2", "one_per_process"]
    for name, sweep in result["sweeps"].items():
        (round_,) = sweep["rounds"]
        for mode, run in round_.items():
            expected = sweep["seed_trials"] if mode == "seeds5" else sweep["trials"]
            assert run["trials"] == expected and run["states"] == {"COMPLETE": expected}, (name, mode)
            assert run["span_s"] > 0 and run["cpu_s"] > 0 and run["command_wall_s"] >= run["span_s"]
            assert run["trials_per_hour_span"] == pytest.approx(3600 * expected / run["span_s"])
            assert 0 < run["span_cpu_s"] < run["cpu_s"]  # the trials' own CPU: without the start-up
            if mode != "sb3":  # trials trained in population jobs in population mode only
                assert (run["population_jobs"] > 0) == mode.startswith("population"), (name, mode)
        for key in ["population_2_over_one_per_process"] + [f"population_2_over_{p}" for p in sb3 if name == "halfcheetah"]:
            assert sweep["ratios"][key]["span_median"] > 0
    assert result["sweeps"]["halfcheetah"]["seed_cost"]["duration_ratio_median"] > 0
    breakdown = result["breakdown"]["median"]
    assert set(breakdown) == {"population_2", "one_per_process", *sb3, "seeds5", "env_steps_only"}
    assert all(v["total"] > 0 for v in breakdown.values())
    assert result["halfcheetah_config_check"]["layers"][0] == [{"units": 64, "activation": "tanh"}] * 2
    assert "## Sweep throughput" in sweep_trials.markdown_section(result)


def test_population_merge_keeps_the_workloads_not_measured_in_table_order():
    from bench import population

    earlier = {"command": "python -m bench.population", "notes": ["old note"],
               "workloads": {"pendulum_1024": {"p": "old"}, "halfcheetah_cleanrl": {"p": "old"},
                             "halfcheetah_8env": {"p": "old", "measured_by": "python -m bench.population --quick"}}}
    result = {"notes": ["new note", "old note"], "workloads": {"halfcheetah_cleanrl": {"p": "new"}}}
    population.keep_earlier(result, earlier, ["halfcheetah_cleanrl"])
    assert result["workloads"]["halfcheetah_cleanrl"] == {"p": "new"}  # the measured one is this run's
    assert result["workloads"]["pendulum_1024"] == {"p": "old", "measured_by": "python -m bench.population"}
    # a workload kept twice keeps the command that really measured it
    assert result["workloads"]["halfcheetah_8env"]["measured_by"] == "python -m bench.population --quick"
    assert result["notes"] == ["old note", "new note"]
    ordered = population.in_table_order({**result["workloads"], "custom": {}})
    assert list(ordered) == ["halfcheetah_cleanrl", "halfcheetah_8env", "pendulum_1024", "custom"]


def test_update_floor_step_trains_every_member_on_its_own_and_counts_the_workload_flops():
    from bench.update_floor import env_dims, minibatch_step
    w = HALFCHEETAH_CLEANRL
    OBS_DIM, ACTION_DIM = env_dims(w)  # noqa: N806
    assert (OBS_DIM, ACTION_DIM) == (17, 6)  # HalfCheetah-v5's spaces
    step, flops, params = minibatch_step(3, w.minibatch_size, w.hidden, w.activation, OBS_DIM, ACTION_DIM)
    per_member = (mlp_train_flops(w.minibatch_size, layer_dims(OBS_DIM, ACTION_DIM, w.hidden))
                  + mlp_train_flops(w.minibatch_size, layer_dims(OBS_DIM, 1, w.hidden)))
    assert flops == 3 * per_member == 3 * update_flops(w, OBS_DIM, ACTION_DIM) // (w.epochs * w.minibatches)
    before = [p.detach().clone() for p in params]
    step()
    for old, new in zip(before, params):  # Adam moves every member's every parameter
        assert new.shape[0] == 3
        assert all(not torch.equal(old[m], new.detach()[m]) for m in range(3))
