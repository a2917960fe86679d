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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from workbench.config import ConfigError
from workbench.metric_names import EVAL
from workbench.tracking import Tracker
from workbench.progress import Progress
from workbench.train import TrainResult, build_population, resolved_config

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


def run_population(cfg: DictConfig, output_dir: Path | str,
                   callbacks: MemberCallbacks | None = None) -> list[TrainResult]:
    callbacks = callbacks or MemberCallbacks()
    output_dir = Path(output_dir)
    members = member_configs(cfg)
    dirs = [output_dir / f"member_{i}" for i in range(len(members))]
    agent = build_population(members, dirs)
    for i, member_dir in enumerate(dirs):  # load before writing anything (a bad checkpoint leaves nothing)
        if (member_dir / "last.ckpt").exists():
            agent.load_checkpoint(member_dir / "last.ckpt", load_training_state=cfg.load_training_state, member=i)

    group = cfg.population.name or output_dir.name
    trackers, results = [], []
    for i, (member, member_dir) in enumerate(zip(members, dirs)):
        member_dir.mkdir(parents=True, exist_ok=True)
        config_dict = resolved_config(member)
        config_dict["population"] = {"name": group, "member": i, "size": len(members),
                                     "seeds": [int(m.seed) for m in members]}
        (member_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config_dict)))
        logger = OmegaConf.to_object(member.logger)
        logger.group = group
        trackers.append(Tracker.start(config_dict, logger, member_dir, background=True))
        results.append(TrainResult(output_dir=member_dir))
    announced = [False] * len(members)

    def announce(member: int) -> None:
        announced[member] = True
        tracker = trackers[member]
        if callbacks.on_start:
            callbacks.on_start(member, {"wandb_run_id": tracker.run_id, "output_dir": str(dirs[member]),
                                        "wandb_run_dir": str(tracker.run_dir) if tracker.run_dir else None})

    # plain lines per member (one bar per member would fight over the terminal)
    progress = [Progress(agent.max_epochs_per_member[i], log, label=f"member {i}", interactive=False)
                for i in range(len(members))]

    def on_iteration(member: int, metrics: dict[str, float]) -> None:
        trackers[member].log(metrics)
        if not announced[member] and trackers[member].started:
            announce(member)
        result = results[member]
        result.history.append(metrics)
        if EVAL.episode_reward in metrics:
            result.final_eval_return = metrics[EVAL.episode_reward]
            result.best_eval_return = max(result.best_eval_return or -float("inf"), metrics[EVAL.episode_reward])
        progress[member].update(agent.epochs[member], agent.step_counts[member], metrics)
        if callbacks.on_iteration:
            callbacks.on_iteration(member, agent.epochs[member], metrics)

    started = time.time()
    stopped_by: BaseException | None = None
    try:
        agent.fit(on_iteration)
    except BaseException as exc:
        stopped_by = exc
        raise
    finally:
        for i, (tracker, result) in enumerate(zip(trackers, results)):
            result.frames = agent.step_counts[i]
            extra, exit_code = (callbacks.on_end(i, stopped_by) if callbacks.on_end
                                else ({}, int(stopped_by is not None)))
            tracker.update_summary({"frames": agent.step_counts[i], "wall_time_s": time.time() - started,
                                    "final_eval_return": result.final_eval_return,
                                    "best_eval_return": result.best_eval_return, **extra})
            tracker.finish(exit_code)
            if not announced[i]:
                announce(i)
            result.wandb_run_id = tracker.run_id
            result.wandb_run_dir = str(tracker.run_dir) if tracker.run_dir else None
    return results

