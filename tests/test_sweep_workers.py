"""Real multi-process sweeps of the fake app: journal storage with 2 workers, a killed
worker, resume after an interrupt, bad sweep files, and the submitit_local launcher."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from workbench.sweep.driver import budget_used
from workbench.testing.fake_sweep.harness import env_for, open_study, run, sweep_cli_cmd, worker_cmd, write_sweep

pytestmark = pytest.mark.slow


def states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def test_two_workers_share_a_journal_study(tmp_path: Path):
    write_sweep(tmp_path, "duo", {"n_trials": 8})
    done = run(sweep_cli_cmd(tmp_path, "duo", ["--workers", "2"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = open_study(tmp_path, "duo")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 8 and budget_used(trials) == 8
    counts = states(study)
    assert counts.get("PRUNED", 0) >= 1 and counts.get("COMPLETE", 0) >= 2, counts
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    for t in trials:
        assert "agent.e_clip" in t.params and t.user_attrs["wandb_run_id"].startswith("fake-")
        assert Path(t.user_attrs["output_dir"]) == tmp_path / "multirun" / "duo" / str(t.number)
    assert "best trial" in done.stdout
    # the status lines: one per trial with elapsed time and ETA; the last one printed once, by the
    # parent's summary (not again by the worker that ran the last trial, nor by each worker's end)
    status = [line for line in done.stdout.splitlines() if line.startswith("[duo] ")]
    assert [line for line in status if line.startswith("[duo] 8/8 finished")] == status[-1:]
    duration = r"\d+(h\d\dm|m\d\ds|s)"
    assert re.search(rf"\| elapsed {duration}$", status[-1]), status[-1]
    assert all(re.search(rf"\| elapsed {duration}, ETA ({duration}|-)$", line) for line in status[:-1]), status
    assert len(status) >= 7  # the other trials' lines (some may have been cut by the last one)
    csv = (tmp_path / "sweeps_db" / "duo.summary.csv").read_text().splitlines()
    assert csv[0].startswith("rank,number,state,value") and len(csv) == 9


def test_failing_trials_are_recorded_and_the_study_goes_on(tmp_path: Path):
    write_sweep(tmp_path, "boom", {"n_trials": 3})
    done = run(worker_cmd(tmp_path, "boom", ["fake.raise_at_iteration=2"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = open_study(tmp_path, "boom").get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert all(t.user_attrs["fail_reason"] == "RuntimeError: fake training exploded at iteration 2"
               for t in trials)
    assert "3 failed" in done.stdout


def test_killed_worker_trial_fails_by_heartbeat_and_is_retried(tmp_path: Path):
    # slow trials (2 s) so the kill lands mid-trial; grace period 4 s
    write_sweep(tmp_path, "kill", {"n_trials": 6}, iterations=10, iteration_seconds=0.2)
    cmd = worker_cmd(tmp_path, "kill")
    assert run(cmd + ["hydra.sweeper.dry_run=true"], cwd=tmp_path).returncode == 0
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env_for(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    victim = workers[0]
    study = open_study(tmp_path, "kill")
    deadline = time.time() + 120
    killed_number = None
    while killed_number is None and time.time() < deadline:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker", "").endswith(f":{victim.pid}") and t.last_step:
                os.kill(victim.pid, signal.SIGKILL)
                killed_number = t.number
                break
        time.sleep(0.1)
    assert killed_number is not None, "the victim never ran a trial"
    victim.wait(timeout=30)
    _, err = workers[1].communicate(timeout=240)
    assert workers[1].returncode == 0, err[-3000:]

    trials = study.get_trials(deepcopy=False)
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL
    assert "heartbeat lost" in killed.user_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == killed_number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == killed.params
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert budget_used(trials) == 6
    # the retry resumed from the killed trial's last.ckpt: it trained only the iterations after it
    killed_dir, retry_dir = Path(killed.user_attrs["output_dir"]), Path(retry.user_attrs["output_dir"])
    saved = json.loads((killed_dir / "last.ckpt").read_text())["iteration"]
    assert saved >= 1 and retry.user_attrs["resumed_from"] == {
        "trial": killed_number, "checkpoint": str(killed_dir / "last.ckpt"),
        "wandb_run_ids": killed.user_attrs["wandb_run_ids"]}
    assert _iterations(retry_dir)[0] == saved + 1


def test_interrupted_sweep_resumes_to_the_same_total(tmp_path: Path):
    write_sweep(tmp_path, "resume", {"n_trials": 6}, iterations=10, iteration_seconds=0.1)
    cmd = worker_cmd(tmp_path, "resume")
    assert run(cmd + ["hydra.sweeper.dry_run=true"], cwd=tmp_path).returncode == 0  # creates the study
    worker = subprocess.Popen(cmd, cwd=tmp_path, env=env_for(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    study = open_study(tmp_path, "resume")
    deadline = time.time() + 120
    while time.time() < deadline:
        finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if len(finished) >= 2 and running and running[0].last_step:
            break
        time.sleep(0.1)
    worker.send_signal(signal.SIGINT)  # Ctrl-C mid-trial
    worker.wait(timeout=60)
    interrupted = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert interrupted and "KeyboardInterrupt" in interrupted[0].user_attrs["fail_reason"]

    again = run(cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study.get_trials(deepcopy=False)
    assert budget_used(trials) == 6
    assert len([t for t in trials if t.state != TrialState.FAIL]) == 6  # the interrupted one re-ran
    assert any(t.user_attrs.get("retry_of") == interrupted[0].number for t in trials)
    # a third run has nothing left to do
    assert run(cmd, cwd=tmp_path).returncode == 0
    assert len(study.get_trials(deepcopy=False)) == len(trials)


@pytest.mark.parametrize(
    "sweeper, message",
    [
        ({"params": {"agent.e_clipp": "interval(0.1, 0.3)"}}, "no such key in the composed config; did you mean agent.e_clip"),
        ({"params": {"agent.e_clip": "interval(0.1, 0.3"}}, "cannot parse"),
        ({"params": {"agent.tau": "interval(0.99, 0.9)"}}, "low must be < high"),
        ({"sampler": {"_target_": "optuna.samplers.NoSuchSampler"}}, "cannot build 'optuna.samplers.NoSuchSampler'"),
        ({"pruner": {"_target_": "optuna.pruners.MedianPrunr"}}, "cannot build 'optuna.pruners.MedianPrunr'"),
        ({"params": {"env": "choice(pendulum, nosuchenv)"}}, "does not compose"),
        ({"preload": ["workbench.no_such_module"]}, "preload: 'workbench.no_such_module' is not an importable"),
        ({"preload": ["workbench.train:"]}, "preload: 'workbench.train:' is not an importable"),
        ({"sampler": {"_target_": "optuna.samplers.GridSampler", "search_space": {"agent.tau": [0.9, 0.95]}}},
         "the grid has no values for agent.e_clip"),
        ({"pruner": {"_target_": "optuna.pruners.WilcoxonPruner"}}, "WilcoxonPruner needs per-seed objectives"),
    ],
)
def test_bad_sweep_file_fails_before_any_trial(tmp_path: Path, sweeper: dict, message: str):
    conf = {"params": {"agent.e_clip": "interval(0.1, 0.3)"}, "conditions": {}}
    conf.update(sweeper)
    write_sweep(tmp_path, "bad", conf)
    done = run(sweep_cli_cmd(tmp_path, "bad", ["--workers", "2"]), cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr[-3000:]
    assert "no trial started" in done.stderr
    assert not (tmp_path / "multirun" / "bad" / "0").exists()


def test_preload_runs_once_per_worker_before_its_first_trial(tmp_path: Path):
    marker = tmp_path / "preloaded.txt"
    write_sweep(tmp_path, "warm", {"n_trials": 4, "preload": ["workbench.testing.fake_sweep.training:warm_up"]},
                body={"fake": {"iteration_seconds": 0.02, "preload_marker": str(marker)}})
    done = run(sweep_cli_cmd(tmp_path, "warm", ["--workers", "2"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = open_study(tmp_path, "warm").get_trials(deepcopy=False)
    calls = [line.split() for line in marker.read_text().splitlines()]  # "<pid> <time>" per call
    assert len(calls) == 2 and len({pid for pid, _ in calls}) == 2  # once in each worker, not in the dry run
    checked = 0
    for pid, when in calls:  # a worker that started late may have found the budget spent
        mine = [t for t in trials if t.user_attrs["worker"].endswith(f":{pid}")]
        if mine:
            assert float(when) < min(t.datetime_start.timestamp() for t in mine)
            checked += 1
    assert checked >= 1 and sum(len([t for t in trials if t.user_attrs["worker"].endswith(f":{pid}")])
                                for pid, _ in calls) == len(trials) == 4


def test_submitit_local_launcher_runs_trials_asynchronously(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    write_sweep(tmp_path, "slurmish", {"n_trials": 4, "n_jobs": 2}, iterations=6)
    cmd = worker_cmd(tmp_path, "slurmish", ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"])
    done = run(cmd, cwd=tmp_path, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    study = open_study(tmp_path, "slurmish")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    assert all(t.user_attrs.get("wandb_run_id") for t in trials)  # the jobs reached the study
    # every job ran in its own submitit process, not in the sweeper's
    assert len({t.user_attrs["output_dir"] for t in trials}) == 4


def _iterations(output_dir: Path) -> list[int]:
    return [int(line.split()[1]) for line in (output_dir / "fake_iterations.log").read_text().splitlines()]


def test_submitit_local_job_requeued_at_its_time_limit_resumes_its_trial(tmp_path: Path):
    """The job gets submitit's time-limit signal at iteration 4 (the fake sends it to itself, as
    SLURM would signal_delay_s before the limit): it checkpoints, submitit requeues it (the local
    executor starts it again), and the same trial resumes from its last.ckpt. Its value and
    curve are those of the same trial never interrupted (trial 0 is the defaults in both studies)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"]
    for name, fake in (("cut", ["fake.signal_at_iteration=4"]), ("whole", [])):
        write_sweep(tmp_path, name, {"n_trials": 1}, iterations=8, iteration_seconds=0.05)
        done = run(worker_cmd(tmp_path, name, launcher + fake), cwd=tmp_path, timeout=400)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    (cut,) = open_study(tmp_path, "cut").get_trials(deepcopy=False)
    (whole,) = open_study(tmp_path, "whole").get_trials(deepcopy=False)
    assert cut.state == TrialState.COMPLETE and cut.user_attrs["requeues"] == 1
    log = [line.split() for line in (Path(cut.user_attrs["output_dir"]) / "fake_iterations.log").read_text().splitlines()]
    assert [int(it) for _, it in log] == list(range(1, 9))  # each iteration trained once
    assert len({pid for pid, it in log if int(it) <= 4}) == 1 and {pid for pid, it in log if int(it) <= 4} != {
        pid for pid, it in log if int(it) > 4}  # two processes: the job and its requeued self
    assert cut.value == whole.value and cut.intermediate_values == whole.intermediate_values
    assert len(cut.user_attrs["wandb_run_ids"]) == 2


def _children(parent: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:  # a zombie (nobody reaped it yet) has stopped too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for_a_running_trial(study, deadline_s: float = 120):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.last_step]
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError("no trial started running")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_stop_when_the_sweep_parent_is_killed(tmp_path: Path):
    write_sweep(tmp_path, "orphans", {"n_trials": 6}, iterations=40, iteration_seconds=0.2)
    parent = subprocess.Popen(sweep_cli_cmd(tmp_path, "orphans", ["--workers", "2"]), cwd=tmp_path,
                              env=env_for(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _journal_ready(tmp_path, "orphans")
    study = open_study(tmp_path, "orphans")
    trial = _wait_for_a_running_trial(study)
    workers = _children(parent.pid)
    assert len(workers) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "workers ran on after their parent died"
    # they stopped as on Ctrl-C: the running trial is recorded and its retry queued
    frozen = study.trials[trial.number]
    assert frozen.state == TrialState.FAIL and "KeyboardInterrupt" in frozen.user_attrs["fail_reason"]
    assert any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False))


def _journal_ready(directory: Path, name: str, timeout: float = 60) -> bool:
    journal = directory / "sweeps_db" / f"{name}.journal"
    deadline = time.time() + timeout
    while not journal.exists() and time.time() < deadline:
        time.sleep(0.1)
    return journal.exists()


def test_sweep_that_reached_its_budget_exits_0_after_a_worker_was_killed(tmp_path: Path):
    write_sweep(tmp_path, "survive", {"n_trials": 5}, iterations=10, iteration_seconds=0.2)
    parent = subprocess.Popen(sweep_cli_cmd(tmp_path, "survive", ["--workers", "2"]), cwd=tmp_path,
                              env=env_for(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _journal_ready(tmp_path, "survive")
    trial = _wait_for_a_running_trial(open_study(tmp_path, "survive"))
    os.kill(int(trial.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    _, err = parent.communicate(timeout=240)
    assert parent.returncode == 0, err[-3000:]  # was 247: the dead worker's -9
    trials = open_study(tmp_path, "survive").get_trials(deepcopy=False)
    assert "heartbeat lost" in trials[trial.number].user_attrs["fail_reason"]
    assert budget_used(trials) == 5 and not [t for t in trials if not t.state.is_finished()]
