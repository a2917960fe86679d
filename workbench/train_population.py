"""A population run: P members trained side by side, each a run like any other.

``workbench train 'population.seeds=[0,1,2,3]'`` (or ``population.size=4``, or a population file
of per-member overrides, ``population=<name>``) builds one agent with P members. Member i writes
``<run dir>/member_<i>/``: its resolved config (with its own seed and overrides), its W&B run
(group: the population's name) and its checkpoints in the single-agent format, so ``read_run``,
``workbench runs``, the notebooks and a single run's ``checkpoint=`` treat it like any run.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from workbench.config import ConfigError, validate
from workbench.metric_names import EVAL
from workbench.tracking import Tracker
from workbench.progress import Progress
from workbench.train import TrainResult, agent_config, build_population, resolved_config, write_resolved_config

log = logging.getLogger(__name__)


def is_population(cfg: DictConfig) -> bool:
    pop = cfg.get("population")
    return pop is not None and bool(pop.seeds or pop.size or pop.members)


def member_seeds(cfg: DictConfig) -> list[int]:
    pop = cfg.population
    if pop.seeds:
        seeds = [int(s) for s in pop.seeds]
    elif pop.size:
        seeds = [int(cfg.seed) + i for i in range(int(pop.size))]
    else:
        seeds = [int(cfg.seed) + i for i in range(len(pop.members))]
    if pop.members and len(pop.members) != len(seeds):
        raise ConfigError("population.members", f"{len(pop.members)} members",
                          f"one override set per member: {len(seeds)} (from population.seeds/size)")
    if len(set(seeds)) != len(seeds):
        raise ConfigError("population.seeds", seeds, "seeds must be distinct (equal seeds train identical members)")
    return seeds


def member_configs(cfg: DictConfig) -> list[DictConfig]:
    """Each member's whole config: the composed one, its seed, its overrides; population info kept."""
    seeds = member_seeds(cfg)
    overrides = list(cfg.population.members) or [{}] * len(seeds)
    out = []
    for i, (seed, member_overrides) in enumerate(zip(seeds, overrides)):
        member = copy.deepcopy(cfg)
        with open_dict(member):
            member.seed = seed
        for key, value in _as_overrides(member_overrides, i).items():
            if key == "seed":
                raise ConfigError(f"population.members[{i}].seed", value, "set seeds with population.seeds")
            if OmegaConf.select(member, key, default="__missing__") == "__missing__":
                raise ConfigError(f"population.members[{i}].{key}", value, "no such config key")
            OmegaConf.update(member, key, value, merge=False)
        out.append(member)
    return out


def _as_overrides(spec, index: int) -> dict:
    if spec is None:
        return {}
    if isinstance(spec, (DictConfig, Mapping)):
        plain = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
        return {str(k): v for k, v in plain.items()}
    raise ConfigError(f"population.members[{index}]", spec, "a mapping of dotted config keys to values")


@dataclass
class MemberCallbacks:
    """TrainCallbacks with the member's index first (a sweep trial's seeds report through these)."""

    # once per member, when its W&B run has started: (member, {wandb_run_id, wandb_run_dir, output_dir})
    on_start: Callable[[int, dict], None] | None = None
    # after each member's iteration: (member, iteration, metrics); raising stops every member
    on_iteration: Callable[[int, int, dict[str, float]], None] | None = None
    # as each member's run ends: (member, the exception that stopped the population or None)
    # -> (W&B summary values to add, the W&B exit code)
    on_end: Callable[[int, BaseException | None], tuple[dict, int]] | None = None


class PopulationRun:
    """The members of one agent as runs: each slot's config, output dir, W&B run, progress line
    and result. Members start and end one at a time: a sweep closes a pruned trial's slot and
    starts the next trial in it while the others train on.

    ``on_start(slot, info)`` runs once per member, when its W&B run has started, with
    ``wandb_run_id``, ``wandb_run_dir`` and ``output_dir``."""

    def __init__(self, member_cfgs: list[DictConfig], dirs: list[Path], group: str,
                 labels: list[str] | None = None, on_start: Callable[[int, dict], None] | None = None,
                 load_training_state: bool = True, checkpoints: list[Path | None] | None = None) -> None:
        """``checkpoints``: what each member resumes from (None: a fresh start); by default the
        ``last.ckpt`` in its own dir, if there is one."""
        self.agent = build_population(member_cfgs, dirs)
        if checkpoints is None:
            checkpoints = [d / "last.ckpt" if (d / "last.ckpt").exists() else None for d in dirs]
        for i, checkpoint in enumerate(checkpoints):  # load before writing anything (a bad checkpoint leaves nothing)
            if checkpoint is not None:
                self.agent.load_checkpoint(checkpoint, load_training_state=load_training_state, member=i)
        self.group, self.on_start = group, on_start
        self.size = len(member_cfgs)
        self._runs: list[_MemberRun | None] = [None] * self.size
        for i, (member_cfg, member_dir) in enumerate(zip(member_cfgs, dirs)):
            self._open(i, member_cfg, member_dir, labels[i] if labels else f"member {i}")

    def insert(self, slot: int, cfg: DictConfig, output_dir: Path, label: str, checkpoint: Path | None = None) -> None:
        """Start a fresh member (``cfg``'s knobs and seed) in the closed slot ``slot``, resumed
        from ``checkpoint`` (training state included) if one is given."""
        validate(cfg)
        self.agent.insert_member(slot, agent_config(cfg, self.agent.env.action_dim), int(cfg.seed), output_dir)
        if checkpoint is not None:
            self.agent.load_checkpoint(checkpoint, load_training_state=True, member=slot)
        self._open(slot, cfg, output_dir, label)

    def _open(self, slot: int, cfg: DictConfig, output_dir: Path, label: str) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        config_dict = resolved_config(cfg)
        config_dict["population"] = {"name": self.group, "member": slot, "size": self.size,
                                     "seeds": [int(s) for s in self.agent.seeds]}
        write_resolved_config(output_dir, config_dict)
        logger = OmegaConf.to_object(cfg.logger)
        logger.group = self.group
        tracker = Tracker.start(config_dict, logger, output_dir, background=True)
        # plain lines per member (one bar per member would fight over the terminal)
        progress = Progress(self.agent.max_epochs_per_member[slot], log, label=label, interactive=False)
        self._runs[slot] = _MemberRun(tracker, TrainResult(output_dir=output_dir), progress)

    @property
    def open_slots(self) -> list[int]:
        return [i for i, run in enumerate(self._runs) if run is not None]

    def step(self) -> list[tuple[int, int, dict[str, float], bool]]:
        """One iteration of every open member: (slot, its iteration, its metrics, whether it has
        reached its budget) per member, metrics already logged to its W&B run."""
        logs, finishing = self.agent.step()
        out = []
        for slot, metrics in enumerate(logs):
            run = self._runs[slot]
            if metrics is None or run is None:
                continue
            run.tracker.log(metrics)
            if not run.announced and run.tracker.started:
                self._announce(slot)
            run.result.history.append(metrics)
            if EVAL.episode_reward in metrics:
                value = metrics[EVAL.episode_reward]
                run.result.final_eval_return = value
                run.result.best_eval_return = max(run.result.best_eval_return or -float("inf"), value)
            run.progress.update(self.agent.epochs[slot], self.agent.step_counts[slot], metrics)
            out.append((slot, self.agent.epochs[slot], metrics, slot in finishing))
        return out

    def checkpoint(self) -> None:
        """Every open member's last.ckpt (the run stops early: it can resume)."""
        self.agent.save_checkpoint("last.ckpt", self.open_slots)

    def close(self, slot: int, summary: Mapping | None = None, exit_code: int = 0) -> TrainResult:
        """End the member in ``slot``: its W&B summary (``summary`` added) and exit code; the
        slot stops training and may take a new member."""
        run = self._runs[slot]
        assert run is not None, f"slot {slot} is not open"
        result = run.result
        result.frames = self.agent.step_counts[slot]
        run.tracker.update_summary(dict(summary or {}))  # the tracker writes frames, wall time and the returns
        run.tracker.finish(exit_code)
        if not run.announced:
            self._announce(slot)
        result.wandb_run_id = run.tracker.run_id  # a W&B failure mid-run moves it to a fallback offline run
        result.wandb_run_dir = str(run.tracker.run_dir) if run.tracker.run_dir else None
        self.agent.remove_member(slot)
        self._runs[slot] = None
        return result

    def _announce(self, slot: int) -> None:
        run = self._runs[slot]
        run.announced = True
        if self.on_start:
            self.on_start(slot, {"wandb_run_id": run.tracker.run_id, "output_dir": str(run.result.output_dir),
                                 "wandb_run_dir": str(run.tracker.run_dir) if run.tracker.run_dir else None})


@dataclass
class _MemberRun:
    tracker: Tracker
    result: TrainResult
    progress: Progress
    announced: bool = False


def run_population(cfg: DictConfig, output_dir: Path | str,
                   callbacks: MemberCallbacks | None = None) -> list[TrainResult]:
    """Train ``cfg``'s population to its budget; each member's result in member order."""
    callbacks = callbacks or MemberCallbacks()
    output_dir = Path(output_dir)
    members = member_configs(cfg)
    dirs = [output_dir / f"member_{i}" for i in range(len(members))]
    run = PopulationRun(members, dirs, cfg.population.name or output_dir.name, on_start=callbacks.on_start,
                        load_training_state=cfg.load_training_state)
    results: list[TrainResult | None] = [None] * len(members)
    stopped_by: BaseException | None = None

    def close(slot: int) -> None:
        extra, exit_code = callbacks.on_end(slot, stopped_by) if callbacks.on_end else ({}, int(stopped_by is not None))
        results[slot] = run.close(slot, extra, exit_code)

    try:
        while run.open_slots:
            done = []
            for slot, iteration, metrics, finished in run.step():
                if callbacks.on_iteration:
                    callbacks.on_iteration(slot, iteration, metrics)
                if finished:
                    done.append(slot)
            for slot in done:
                close(slot)
    except BaseException as exc:
        stopped_by = exc
        run.checkpoint()
        raise
    finally:
        for slot in run.open_slots:
            close(slot)
    return results  # type: ignore[return-value]
