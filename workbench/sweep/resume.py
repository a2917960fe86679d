"""Which checkpoint a trial resumes from, and how its objective picks up where it stopped.

A trial's training leaves ``<output dir>/last.ckpt``. Two things restart a trial's training:

- its job is **requeued** (SLURM time limit or preemption, ``workbench.sweep.slurm``): the same
  trial, RUNNING all along, in the same output directory;
- the trial is **retried** after its worker died or was interrupted (``heartbeat.enqueue_retry``):
  a new trial with the same params, ``user_attrs["retry_of"]`` = the trial it replaces, in its
  own output directory.

Either way it resumes from the newest checkpoint of its lineage instead of starting over.
``resume_checkpoint`` decides which: the trial's own ``last.ckpt``, else that of the trial it
retries, and so on up the ``retry_of`` chain. A checkpoint counts only with its stamp,
``trial.json`` beside it (written before the training starts): the same study, the trial number
and start time of the trial that owns the directory (a study deleted and created again under the
same name reuses ``multirun/<study>/<n>``), and the same params as the resuming trial.

The objective (the mean of the last ``window`` evaluations) must not forget the iterations
before the checkpoint: ``ResumedTraining`` writes the objective's metrics of each iteration to
``objective_history.jsonl`` beside the checkpoints, and when a training resumes it replays the
iterations the checkpoint holds into the trial's callbacks before the first new one. A requeued
trial reported those steps already and does not report them again (``reported_before``); a
retry reports them (so its curve is whole) and the pruner judges them as usual.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
from omegaconf import DictConfig, open_dict
from optuna.trial import FrozenTrial

from workbench.sweep.slurm import JobRequeued, RequeueGuard

log = logging.getLogger(__name__)

CHECKPOINT = "last.ckpt"
STAMP = "trial.json"
HISTORY = "objective_history.jsonl"
ALWAYS_KEPT = ("eval/episode_reward", "info/frames")  # what the trial's verdict reads besides its objective


@dataclass(frozen=True)
class Resume:
    checkpoint: Path
    trial: int  # the trial whose output directory holds the checkpoint


def stamp_of(study_name: str, trial: FrozenTrial) -> dict:
    started = trial.datetime_start.isoformat() if trial.datetime_start else None
    return {"study": study_name, "trial": trial.number, "started": started, "params": _plain(trial.params)}


def write_stamp(directory: Path, study_name: str, trial: FrozenTrial) -> None:
    """Mark ``directory`` as ``trial``'s (its checkpoints are then resumable)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STAMP}.{os.getpid()}"
    tmp.write_text(json.dumps(stamp_of(study_name, trial), indent=1) + "\n")
    os.replace(tmp, directory / STAMP)


def stamp_mismatch(directory: Path, study_name: str, owner: FrozenTrial, params: dict) -> str | None:
    """None if ``directory``'s stamp says it is ``owner``'s, trained with ``params``; else why not."""
    try:
        stamp = json.loads((directory / STAMP).read_text())
    except FileNotFoundError:
        return f"no {STAMP} beside it"
    except (OSError, ValueError) as exc:
        return f"its {STAMP} is unreadable ({exc})"
    expected = stamp_of(study_name, owner)
    for key in ("study", "trial", "started"):
        if not isinstance(stamp, dict) or stamp.get(key) != expected[key]:
            got = stamp.get(key) if isinstance(stamp, dict) else stamp
            return f"it belongs to {key} {got!r}, not {expected[key]!r}"
    if stamp.get("params") != _plain(params):
        return f"it was trained with other params ({stamp.get('params')})"
    return None


def lineage(study: optuna.Study, trial: FrozenTrial) -> list[FrozenTrial]:
    """``trial``, the trial it retries, that one's, ... (``user_attrs["retry_of"]``)."""
    chain, seen = [trial], {trial.number}
    by_number = None
    while chain[-1].user_attrs.get("retry_of") is not None:
        number = int(chain[-1].user_attrs["retry_of"])
        if number in seen:
            break
        if by_number is None:
            by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        if number not in by_number:
            break
        seen.add(number)
        chain.append(by_number[number])
    return chain


def _directories(trial: FrozenTrial, own: Path | None) -> list[Path]:
    dirs = [own] if own is not None else []
    recorded = trial.user_attrs.get("output_dir")
    if recorded and (own is None or Path(recorded).resolve() != own.resolve()):
        dirs.append(Path(recorded))
    return dirs


def resume_checkpoint(study: optuna.Study, trial: FrozenTrial, output_dir: Path | None = None) -> Path | None:
    """The ``last.ckpt`` that ``trial`` resumes from, or None to start fresh.

    Looks in the trial's own output directory (``output_dir``, the job's, and the recorded
    ``user_attrs["output_dir"]``), then in those of the trials up its ``retry_of`` chain, newest
    first; takes the first checkpoint whose stamp matches its owner and ``trial``'s params."""
    return _find(study, trial, output_dir)[0]


def claim_resume(study: optuna.Study, frozen: FrozenTrial, output_dir: Path | None,
                 trial: optuna.Trial) -> Resume | None:
    """As ``resume_checkpoint``, and recorded (``record_resume``): what a population member resumes from."""
    checkpoint, owner = _find(study, frozen, output_dir)
    return None if checkpoint is None or owner is None else record_resume(trial, frozen, owner, checkpoint)


def _find(study: optuna.Study, trial: FrozenTrial, output_dir: Path | None) -> tuple[Path | None, FrozenTrial | None]:
    for owner in lineage(study, trial):
        for directory in _directories(owner, output_dir if owner is trial else None):
            checkpoint = directory / CHECKPOINT
            if checkpoint.is_file() and stamp_mismatch(directory, study.study_name, owner, trial.params) is None:
                return checkpoint, owner
    return None, None


def prepare_resume(cfg: DictConfig, study: optuna.Study, frozen: FrozenTrial, output_dir: Path,
                   trial: optuna.Trial) -> Resume | None:
    """Before a single-run trial trains: stamp its output directory and, if it resumes, point
    ``cfg.checkpoint`` at the checkpoint (training state included) and record where from
    (``cfg.trial.resumed_from``, in the W&B run's config; the trial's ``user_attrs["resumed_from"]``
    with the W&B run ids of the runs it continues). A ``last.ckpt`` in the output directory that
    is not this trial's is moved to ``last.ckpt.stale``: ``run_training`` would resume from it."""
    output_dir = Path(output_dir)
    checkpoint, owner = _find(study, frozen, output_dir)
    own = output_dir / CHECKPOINT
    if own.is_file() and (checkpoint is None or checkpoint.resolve() != own.resolve()):
        why = stamp_mismatch(output_dir, study.study_name, frozen, frozen.params) or "another trial's"
        stale = own.with_name(CHECKPOINT + ".stale")
        os.replace(own, stale)
        if (output_dir / HISTORY).exists():
            os.replace(output_dir / HISTORY, output_dir / (HISTORY + ".stale"))
        log.warning("trial %d: %s is not this trial's (%s): moved to %s", frozen.number, own, why, stale.name)
    write_stamp(output_dir, study.study_name, frozen)
    if checkpoint is None or owner is None:
        return None
    found = record_resume(trial, frozen, owner, checkpoint)
    with open_dict(cfg):
        cfg.checkpoint = str(checkpoint)
        cfg.load_training_state = True
        cfg.trial.resumed_from = {"trial": found.trial, "checkpoint": str(found.checkpoint)}
    return found


def record_resume(trial: optuna.Trial, frozen: FrozenTrial, owner: FrozenTrial, checkpoint: Path) -> Resume:
    """Say where ``trial`` resumes from: ``user_attrs["resumed_from"]``, with the W&B run ids of
    the runs it continues (the owner's), and the log."""
    runs = [str(r) for r in owner.user_attrs.get("wandb_run_ids") or []]
    trial.set_user_attr("resumed_from", {"trial": owner.number, "checkpoint": str(checkpoint), "wandb_run_ids": runs})
    how = "after a requeue" if owner.number == frozen.number else f"retrying trial {owner.number}"
    log.info("trial %d resumes from %s (%s)", frozen.number, checkpoint, how)
    return Resume(checkpoint, owner.number)


def reported_before(trial: optuna.Trial, step: int) -> bool:
    """Whether ``trial`` holds a report at ``step`` already: a requeued trial trains again the
    iterations after its checkpoint (and replays those before it), which it may have reported."""
    cached = getattr(trial, "_cached_frozen_trial", None)  # what Trial.report itself checks
    return cached is not None and step in cached.intermediate_values


def tracked_keys(settings: Any, objectives: Any = None) -> set[str]:
    """The metrics a trial's callbacks read: its objective(s), the fallback, eval return and frames."""
    keys = {settings.metric, *ALWAYS_KEPT}
    if getattr(settings, "fallback_metric", None):
        keys.add(settings.fallback_metric)
    keys.update(getattr(objectives, "metrics", ()) or ())
    return keys


class ResumedTraining:
    """``run_training`` for one trial: keeps the objective's history beside the checkpoints,
    replays it when the training resumed from a checkpoint, and stops at the end of an
    iteration when the job is to be requeued (``guard``)."""

    def __init__(self, run_training: Callable[..., Any], keys: Iterable[str], resume: Resume | None,
                 guard: RequeueGuard | None = None) -> None:
        self.run_training, self.keys = run_training, set(keys)
        self.resume, self.guard = resume, guard
        self.replayed = 0  # how many iterations were replayed (tests, logs)

    def __call__(self, cfg: DictConfig, output_dir: Path, callbacks: Any = None) -> Any:
        if callbacks is None or callbacks.on_iteration is None:
            return self.run_training(cfg, output_dir, callbacks)
        inner = callbacks.on_iteration
        path = Path(output_dir) / HISTORY
        handle = None

        def on_iteration(iteration: int, metrics: dict) -> None:
            nonlocal handle
            if handle is None:  # the first iteration of this run: what came before it, if resumed
                past = self._past(iteration)
                handle = open_history(path, past)
                for it, logged in past:
                    inner(it, logged)
                self.replayed = len(past)
                if past:
                    log.info("replayed iterations %d-%d of the checkpoint into the trial's objective",
                             past[0][0], past[-1][0])
            handle.write(json.dumps({"it": int(iteration), "m": kept_metrics(metrics, self.keys)}) + "\n")
            inner(iteration, metrics)
            if self.guard is not None and self.guard.requested:
                raise JobRequeued(f"requeued at the end of iteration {iteration}")

        callbacks.on_iteration = on_iteration
        try:
            return self.run_training(cfg, output_dir, callbacks)
        finally:
            if handle is not None:
                handle.close()

    def _past(self, first: int) -> list[tuple[int, dict]]:
        return [] if self.resume is None else past_iterations(self.resume.checkpoint, first)


def past_iterations(checkpoint: Path, first: int) -> list[tuple[int, dict]]:
    """The iterations before ``first`` from the history beside ``checkpoint``."""
    source = checkpoint.parent / HISTORY
    try:
        lines = source.read_text().splitlines()
    except OSError:
        log.warning("no %s beside %s: the objective starts from the resumed iterations only", HISTORY, checkpoint)
        return []
    past: dict[int, dict] = {}
    for line in lines:
        try:
            entry = json.loads(line)
            it = int(entry["it"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a kill
        if it < first:
            past[it] = entry.get("m") or {}
    return sorted(past.items())


def kept_metrics(metrics: dict, keys: Iterable[str]) -> dict:
    """What an iteration's history line keeps: the metrics the trial's objective reads."""
    keys = set(keys)
    return {k: float(v) for k, v in metrics.items() if k in keys and isinstance(v, (int, float))}


def open_history(path: Path, past: list[tuple[int, dict]]):
    """Start this run's history with the replayed iterations; returns the open, line-buffered file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "w") as out:
        for it, metrics in past:
            out.write(json.dumps({"it": it, "m": metrics}) + "\n")
    os.replace(tmp, path)
    return open(path, "a", buffering=1)


def _plain(params: dict) -> dict:
    """Params as JSON gives them back (so a stamp compares equal to the trial's own)."""
    def value(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        return v
    return json.loads(json.dumps({str(k): value(v) for k, v in params.items()}, sort_keys=True, default=str))
