"""A trial resumes from a checkpoint instead of starting over: after its job was requeued (SLURM
time limit or preemption: its own last.ckpt) and when it is the retry of an interrupted trial
(the original's last.ckpt). In-process with the fake training (exact: its state is its
checkpoint) and with a tiny real training."""
from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from workbench.sweep import resume
from workbench.testing.fake_sweep import run_training
from workbench.testing.fake_sweep.harness import REPO_ROOT
from workbench.sweep.storage import StorageSpec, open_storage
from workbench.sweep.trial import run_trial

FAKE_CONF = REPO_ROOT / "workbench" / "testing" / "fake_sweep" / "conf"
SWEEPER = {"objective": {"metric": "eval/episode_reward", "window": 3, "report_every": 1},
           "heartbeat": {"interval": 0.2, "max_retry": 2}}
E_CLIP = 0.21


@pytest.fixture
def study(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    journal = tmp_path / "s.journal"
    return optuna.create_study(study_name="s", storage=open_storage(StorageSpec(str(journal), "journal")),
                               direction="maximize")


def fake_cfg(study: optuna.Study, trial: optuna.Trial, fake: dict | None = None, iterations: int = 12):
    cfg = OmegaConf.merge(
        OmegaConf.load(FAKE_CONF / "config.yaml"),
        {"env": OmegaConf.load(FAKE_CONF / "env" / "pendulum.yaml")},
        # an evaluation every iteration; window 3: the value needs the evaluations before a cut
        {"agent": {"training_max_steps": iterations * 8 * 32, "evaluator": {"eval_metrics_every": 1}},
         "trial": {"study_name": "s", "number": trial.number,
                   "storage": str(study._storage._backend._file_path)},
         "fake": fake or {}},
    )
    cfg.pop("defaults", None)
    cfg.pop("hydra", None)
    return cfg


def ask(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("agent.e_clip", 0.1, 0.3)
    return trial


def interrupt_at(iteration: int, training=run_training):
    """The training, stopped by Ctrl-C at the end of ``iteration`` (as a SIGINT would)."""
    def run(cfg, output_dir, callbacks):
        inner = callbacks.on_iteration

        def on_iteration(it, metrics):
            inner(it, metrics)
            if it == iteration:
                raise KeyboardInterrupt
        callbacks.on_iteration = on_iteration
        return training(cfg, output_dir, callbacks)
    return run


def iterations_run(output_dir: Path) -> list[int]:
    return [int(line.split()[1]) for line in (output_dir / "fake_iterations.log").read_text().splitlines()]


def reference(study: optuna.Study, tmp_path: Path) -> optuna.trial.FrozenTrial:
    """The same params, never interrupted."""
    study.enqueue_trial({"agent.e_clip": E_CLIP})
    trial = ask(study)
    run_trial(fake_cfg(study, trial), tmp_path / "reference", run_training, SWEEPER)
    return study.trials[trial.number]


def interrupted(study, directory: Path, at: int):
    """A trial (the first of its line, or the WAITING retry of one) interrupted at iteration ``at``."""
    trial = ask(study)
    with pytest.raises(KeyboardInterrupt):
        run_trial(fake_cfg(study, trial), directory, interrupt_at(at), SWEEPER)
    return trial


def test_a_retry_resumes_from_the_interrupted_trials_checkpoint(study, tmp_path: Path):
    ref = reference(study, tmp_path)
    study.enqueue_trial({"agent.e_clip": E_CLIP})
    first = interrupted(study, tmp_path / "first", 7)
    assert study.trials[first.number].state == TrialState.FAIL
    retry = ask(study)  # the WAITING retry that the interrupt enqueued
    assert study.trials[retry.number].user_attrs["retry_of"] == first.number
    cfg = fake_cfg(study, retry)
    outcome = run_trial(cfg, tmp_path / "retry", run_training, SWEEPER)

    frozen = study.trials[retry.number]
    assert outcome.state == "COMPLETE"
    assert iterations_run(tmp_path / "retry") == list(range(8, 13))  # not from 1: from the checkpoint
    assert cfg.checkpoint == str(tmp_path / "first" / "last.ckpt") and cfg.load_training_state is True
    assert cfg.trial.resumed_from == {"trial": first.number, "checkpoint": str(tmp_path / "first" / "last.ckpt")}
    assert frozen.user_attrs["resumed_from"]["trial"] == first.number
    assert frozen.user_attrs["resumed_from"]["wandb_run_ids"] == study.trials[first.number].user_attrs["wandb_run_ids"]
    # the objective (mean of the last 3 evaluations) and the whole curve as if never interrupted:
    # iterations 1-7 were replayed from the first trial's history, not trained again
    assert frozen.value == ref.value
    assert frozen.intermediate_values == ref.intermediate_values
    assert frozen.user_attrs["frames"] == ref.user_attrs["frames"]


def test_a_retry_of_a_retry_resumes_from_the_newest_checkpoint(study, tmp_path: Path):
    ref = reference(study, tmp_path)
    study.enqueue_trial({"agent.e_clip": E_CLIP})
    first = interrupted(study, tmp_path / "a", 4)
    second = interrupted(study, tmp_path / "b", 9)
    third = ask(study)
    assert study.trials[third.number].user_attrs["retry_of"] == second.number
    run_trial(fake_cfg(study, third), tmp_path / "c", run_training, SWEEPER)
    assert iterations_run(tmp_path / "b") == list(range(5, 10))
    assert iterations_run(tmp_path / "c") == [10, 11, 12]
    assert study.trials[third.number].value == ref.value


def requeue_by_signal(monkeypatch):
    """What submitit sets up in a job: its handler on USR2 that requeues (the local executor's
    requeue exits with 144). Returns the calls it got."""
    calls = []

    def submitit_handler(signum, frame):
        calls.append(signum)
        raise SystemExit(144)

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    monkeypatch.setattr("workbench.sweep.slurm._preemption_signal", lambda: int(signal.SIGUSR2))
    return calls, previous


def test_a_requeued_job_resumes_its_trial_from_its_own_checkpoint(study, tmp_path: Path, monkeypatch):
    ref = reference(study, tmp_path)
    calls, previous = requeue_by_signal(monkeypatch)
    try:
        study.enqueue_trial({"agent.e_clip": E_CLIP})
        trial = ask(study)
        out = tmp_path / "job"
        with pytest.raises(SystemExit) as exited:  # submitit's handler, called after the checkpoint
            run_trial(fake_cfg(study, trial, {"signal_at_iteration": 5}), out, run_training, SWEEPER)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert exited.value.code == 144 and calls == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR2) is previous  # the guard put submitit's handler back
    frozen = study.trials[trial.number]
    assert frozen.state == TrialState.RUNNING  # not failed: it goes on in the requeued job
    assert frozen.user_attrs["requeues"] == 1
    assert not [t for t in study.trials if t.state == TrialState.WAITING]  # no retry enqueued
    assert json.loads((out / "last.ckpt").read_text())["iteration"] == 5
    assert sorted(frozen.intermediate_values) == [1, 2, 3, 4, 5]

    # the requeued job: the same overrides, so the same trial and output directory
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when a step is reported twice
        outcome = run_trial(fake_cfg(study, trial, {"signal_at_iteration": 5}), out, run_training, SWEEPER)
    frozen = study.trials[trial.number]
    assert outcome.state == "COMPLETE"
    assert iterations_run(out) == list(range(1, 13))  # each iteration trained once
    assert frozen.value == ref.value and frozen.intermediate_values == ref.intermediate_values
    assert len(frozen.user_attrs["wandb_run_ids"]) == 2  # both runs of the trial are linked from it
    assert frozen.user_attrs["resumed_from"] == {"trial": trial.number, "checkpoint": str(out / "last.ckpt"),
                                                 "wandb_run_ids": frozen.user_attrs["wandb_run_ids"][:1]}


def test_a_requeued_trial_does_not_report_a_step_twice(study, tmp_path: Path, monkeypatch):
    """The requeued job finds a last.ckpt older than the trial's last report (iteration 6, reports
    up to 9: a periodic checkpoint, and the job went down before the next): iterations 7-9 are
    trained again, and their reports are neither repeated nor warned about."""
    from workbench.sweep.slurm import JobRequeued

    ref = reference(study, tmp_path)
    out = tmp_path / "job"

    def checkpoint_lags(cfg, output_dir, callbacks):
        inner = callbacks.on_iteration

        def on_iteration(it, metrics):
            inner(it, metrics)
            if it == 6:
                (out / "at6.ckpt").write_bytes((out / "last.ckpt").read_bytes())
            if it == 9:
                os.replace(out / "at6.ckpt", out / "last.ckpt")
                raise JobRequeued("requeued")
        callbacks.on_iteration = on_iteration
        return run_training(cfg, output_dir, callbacks)

    calls, previous = requeue_by_signal(monkeypatch)
    try:
        study.enqueue_trial({"agent.e_clip": E_CLIP})
        trial = ask(study)
        with pytest.raises(SystemExit):
            run_trial(fake_cfg(study, trial), out, checkpoint_lags, SWEEPER)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert sorted(study.trials[trial.number].intermediate_values) == list(range(1, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_trial(fake_cfg(study, trial), out, run_training, SWEEPER)
    frozen = study.trials[trial.number]
    assert iterations_run(out) == list(range(1, 10)) + list(range(7, 13))
    assert frozen.value == ref.value and frozen.intermediate_values == ref.intermediate_values


def test_a_job_submitit_will_not_requeue_fails_its_trial_and_enqueues_a_resuming_retry(study, tmp_path, monkeypatch):
    """hydra-submitit-launcher's SLURM default max_num_timeout=0: at the time limit submitit
    refuses to requeue (UncompletedJobError). The trial is then interrupted: FAIL, and its
    retry (a new job, a full time limit) resumes from the checkpoint."""
    from submitit.core.utils import UncompletedJobError

    def refuses(signum, frame):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    previous = signal.signal(signal.SIGUSR2, refuses)
    monkeypatch.setattr("workbench.sweep.slurm._preemption_signal", lambda: int(signal.SIGUSR2))
    try:
        trial = ask(study)
        with pytest.raises(UncompletedJobError):
            run_trial(fake_cfg(study, trial, {"signal_at_iteration": 3}), tmp_path / "a", run_training, SWEEPER)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    frozen = study.trials[trial.number]
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["fail_reason"] == ("interrupted and not requeued: UncompletedJobError: "
                                                "Job not requeued because: timed-out too many times.")
    number = ask(study).number
    assert study.trials[number].user_attrs["retry_of"] == trial.number
    run_trial(fake_cfg(study, study.trials[number]), tmp_path / "b", run_training, SWEEPER)
    assert iterations_run(tmp_path / "b") == list(range(4, 13))


def test_a_stale_checkpoint_in_the_output_directory_is_not_resumed(study, tmp_path: Path):
    """A study deleted and created again reuses multirun/<study>/<n>: the old trial n's
    last.ckpt must not be taken for the new trial n's."""
    out = tmp_path / "0"
    trial = ask(study)
    run_trial(fake_cfg(study, trial), out, run_training, SWEEPER)  # trial 0 of the old study
    (out / "fake_iterations.log").unlink()
    other = optuna.create_study(study_name="s", storage=open_storage(StorageSpec(str(tmp_path / "new.journal"),
                                                                                 "journal")), direction="maximize")
    fresh = ask(other)
    assert fresh.number == 0
    cfg = fake_cfg(other, fresh)
    cfg.trial.storage = str(tmp_path / "new.journal")
    run_trial(cfg, out, run_training, SWEEPER)
    assert iterations_run(out) == list(range(1, 13))  # trained from scratch
    assert (out / "last.ckpt.stale").exists()
    assert "resumed_from" not in other.trials[0].user_attrs


def test_resume_checkpoint_needs_a_matching_stamp(study, tmp_path: Path):
    first = ask(study)
    with pytest.raises(KeyboardInterrupt):
        run_trial(fake_cfg(study, first), tmp_path / "a", interrupt_at(3), SWEEPER)
    number = ask(study).number
    retry = study.trials[number]
    assert resume.resume_checkpoint(study, retry) == tmp_path / "a" / "last.ckpt"
    stamp = json.loads((tmp_path / "a" / "trial.json").read_text())
    assert stamp["study"] == "s" and stamp["trial"] == first.number and stamp["params"] == retry.params

    for key, value in (("params", {"agent.e_clip": 0.5}), ("trial", 99), ("started", "2001-01-01T00:00:00")):
        (tmp_path / "a" / "trial.json").write_text(json.dumps({**stamp, key: value}))
        assert resume.resume_checkpoint(study, retry) is None, key
    (tmp_path / "a" / "trial.json").write_text(json.dumps(stamp))
    (tmp_path / "a" / "last.ckpt").unlink()
    assert resume.resume_checkpoint(study, retry) is None  # no file: start fresh
    assert resume.resume_checkpoint(study, study.trials[first.number]) is None


def test_a_real_retry_resumes_the_real_training(tmp_path: Path, monkeypatch, tiny_config):
    """The real agent: the retry trains only the iterations after the checkpoint, its frames
    are the whole budget's, and its W&B run's config says where it resumed from."""
    from workbench.tracking import read_run
    from workbench.train import run_training as real_training

    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    journal = tmp_path / "r.journal"
    study = optuna.create_study(study_name="r", storage=open_storage(StorageSpec(str(journal), "journal")),
                                direction="maximize")
    sweeper = {"objective": {"metric": "eval/episode_reward", "window": 1, "report_every": 1}}

    def cfg_for(trial):
        cfg = tiny_config("logger.mode=offline", "agent.evaluator.eval_metrics_every=1")
        OmegaConf.set_struct(cfg, False)
        cfg.trial = {"study_name": "r", "number": trial.number, "storage": str(journal)}
        return cfg

    first = ask(study)
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg_for(first), tmp_path / "first", interrupt_at(3, real_training), sweeper)
    retry = ask(study)
    outcome = run_trial(cfg_for(retry), tmp_path / "retry", real_training, sweeper)
    frozen = study.trials[retry.number]
    original = study.trials[first.number]
    assert outcome.state == "COMPLETE"
    run = read_run(frozen.user_attrs["wandb_run_dir"])
    assert run.config["trial"]["resumed_from"]["trial"] == first.number
    epochs = run.history["epoch"].tolist()
    assert epochs == [3.0, 4.0, 5.0, 6.0, 7.0]  # 0-based: iterations 4-8; 1-3 came from the checkpoint
    assert original.user_attrs["frames"] == 3 * 1024 and frozen.user_attrs["frames"] == 8192  # the budget
    # the curve: the original's reports replayed (steps 1-3), then the new ones
    assert sorted(original.intermediate_values) == [1, 2, 3]
    assert {s: v for s, v in frozen.intermediate_values.items() if s <= 3} == original.intermediate_values
    assert sorted(frozen.intermediate_values) == list(range(1, 9))


def test_a_real_requeued_job_ends_its_run_as_requeued_and_the_next_run_resumes(tmp_path: Path, monkeypatch,
                                                                                tiny_config):
    """The real training under submitit's signal: the first W&B run ends finished (exit code 0)
    with trial/state REQUEUED, the requeued job's run resumes at the next iteration and says
    from where; the trial links both runs."""
    from workbench.tracking import read_run
    from workbench.train import run_training as real_training

    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    journal = tmp_path / "q.journal"
    study = optuna.create_study(study_name="q", storage=open_storage(StorageSpec(str(journal), "journal")),
                                direction="maximize")
    sweeper = {"objective": {"metric": "eval/episode_reward", "window": 1, "report_every": 1}}
    trial = ask(study)
    cfg = lambda: _real_cfg(tiny_config, trial, journal)  # noqa: E731

    def signalled_at_3(cfg, output_dir, callbacks):  # SLURM's signal arrives during iteration 3
        inner = callbacks.on_iteration

        def on_iteration(it, metrics):
            if it == 3:
                os.kill(os.getpid(), signal.SIGUSR2)
            inner(it, metrics)
        callbacks.on_iteration = on_iteration
        return real_training(cfg, output_dir, callbacks)

    calls, previous = requeue_by_signal(monkeypatch)
    try:
        with pytest.raises(SystemExit):
            run_trial(cfg(), tmp_path / "job", signalled_at_3, sweeper)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    first_run = read_run(study.trials[0].user_attrs["wandb_run_dir"])
    assert first_run.exit_code == 0 and first_run.summary["trial/state"] == "REQUEUED"
    assert first_run.history["epoch"].tolist() == [0.0, 1.0, 2.0]

    outcome = run_trial(cfg(), tmp_path / "job", real_training, sweeper)
    frozen = study.trials[0]
    assert outcome.state == "COMPLETE" and frozen.user_attrs["requeues"] == 1
    second_run = read_run(frozen.user_attrs["wandb_run_dir"])
    assert second_run.history["epoch"].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert second_run.config["trial"]["resumed_from"] == {"trial": 0, "checkpoint": str(tmp_path / "job" / "last.ckpt")}
    assert second_run.summary["trial/state"] == "COMPLETE"
    assert frozen.user_attrs["wandb_run_ids"] == [first_run.run_id, second_run.run_id]
    assert sorted(frozen.intermediate_values) == list(range(1, 9)) and frozen.user_attrs["frames"] == 8192


def _real_cfg(tiny_config, trial, journal: Path):
    cfg = tiny_config("logger.mode=offline", "agent.evaluator.eval_metrics_every=1")
    OmegaConf.set_struct(cfg, False)
    cfg.trial = {"study_name": journal.stem, "number": trial.number, "storage": str(journal)}
    return cfg
