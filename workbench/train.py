"""One training run: config -> env -> PPO agent -> tracked metrics -> checkpoints.

``run_training`` is what ``workbench train`` calls for a single run, and what a
sweep trial calls with callbacks that report to Optuna.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf._utils import get_omega_conf_dumper

from workbench.agents.ppo.agent import EVAL_SEED_OFFSET, PPO
from workbench.agents.ppo.config import PPOAgentConfig
from workbench.config import ConfigError, validate
from workbench.envs import make_env
from workbench.metric_names import EVAL
from workbench.progress import Progress
from workbench.tracking import Tracker, start_service
from workbench.tracking.secrets import scrub_secrets

log = logging.getLogger(__name__)


@dataclass
class TrainCallbacks:
    # Called once after the W&B run starts, with wandb_run_id, wandb_run_dir and output_dir.
    on_start: Callable[[dict], None] | None = None
    # Called after every iteration with (iteration, metrics). If it raises (optuna.TrialPruned, say),
    # training stops cleanly (W&B run finished, last.ckpt saved) and the exception propagates.
    on_iteration: Callable[[int, dict[str, float]], None] | None = None
    # Called once as the run ends, with the exception that stopped it (None: it ran to the end).
    # Returns W&B summary values to add and the W&B exit code (a pruned sweep trial stops by an
    # exception, yet its run did not fail).
    on_end: Callable[[BaseException | None], tuple[dict, int]] | None = None


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    final_eval_return: float | None = None
    best_eval_return: float | None = None
    output_dir: Path | None = None
    wandb_run_id: str | None = None
    wandb_run_dir: str | None = None
    frames: int = 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_agent(cfg: DictConfig, output_dir: Path | None) -> PPO:
    """Validate the config, build the training and evaluation envs and the agent (seeded)."""
    return build_population([cfg], [output_dir], single=True)


def build_population(member_cfgs: list[DictConfig], output_dirs: list[Path | None], single: bool = False) -> PPO:
    """One agent for the members' composed configs (each validated; they share the env and the
    structural agent fields). ``single``: a plain run, whose env is built without members."""
    for member_cfg in member_cfgs:
        validate(member_cfg)
    cfg = member_cfgs[0]
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    seeds = [int(c.seed) for c in member_cfgs]
    torch.manual_seed(seeds[0])
    env_spec = OmegaConf.to_container(cfg.env, resolve=True)
    for i, member_cfg in enumerate(member_cfgs[1:], start=1):
        if OmegaConf.to_container(member_cfg.env, resolve=True) != env_spec:
            raise ConfigError(f"population.members[{i}].env", "differs", "all members share one env config")
    members = None if single else seeds
    env = make_env(env_spec, device=device, seed=seeds[0], member_seeds=members)
    eval_envs = cfg.agent.evaluator.num_envs or min(64, env.num_envs // len(seeds))
    eval_seeds = None if single else [s + EVAL_SEED_OFFSET for s in seeds]
    eval_env = make_env({**env_spec, "num_envs": eval_envs}, device=device, seed=seeds[0] + EVAL_SEED_OFFSET,
                        member_seeds=eval_seeds)
    agent_configs = [agent_config(member_cfg, env.action_dim) for member_cfg in member_cfgs]
    return PPO(agent_configs, env, device=device, eval_env=eval_env, seed=seeds, output_dirs=output_dirs)


def agent_config(cfg: DictConfig, action_dim: int) -> PPOAgentConfig:
    """The member's PPOAgentConfig; an actor without ``num_out`` gets the env's action size."""
    if cfg.agent.model.actor.num_out is None:
        cfg.agent.model.actor.num_out = action_dim
    return OmegaConf.to_object(cfg.agent)


def warm_up(cfg: DictConfig) -> None:
    """A sweep worker's start-up, done once before its first trial (``hydra.sweeper.preload``):
    importing this module loaded torch and tensordict; this starts the W&B service."""
    start_service(str(OmegaConf.select(cfg, "logger.mode", default="offline")))


def resolved_config(cfg: DictConfig) -> dict:
    """The whole resolved config as plain data, with secrets (passwords in URLs, API keys) masked."""
    return scrub_secrets(OmegaConf.to_container(cfg, resolve=True))


def write_resolved_config(output_dir: Path, config_dict: dict) -> None:
    """``resolved_config.yaml``: what ``OmegaConf.to_yaml`` writes, with its own dumper, but from the
    plain data (a third of the cost: no DictConfig is built; a sweep writes one per trial)."""
    text = yaml.dump(config_dict, Dumper=get_omega_conf_dumper(), default_flow_style=False, allow_unicode=True,
                     sort_keys=False)
    (output_dir / "resolved_config.yaml").write_text(text)


def run_training(cfg: DictConfig, output_dir: Path | str, callbacks: TrainCallbacks | None = None) -> TrainResult:
    callbacks = callbacks or TrainCallbacks()
    output_dir = Path(output_dir)
    agent = build_agent(cfg, output_dir)
    # Load before writing anything, so a bad checkpoint leaves no half-made run behind.
    resume_from = cfg.checkpoint or (output_dir / "last.ckpt" if (output_dir / "last.ckpt").exists() else None)
    if resume_from:
        log.info("loading %s (%s)", resume_from, "resume" if cfg.load_training_state else "warm start")
        agent.load_checkpoint(resume_from, load_training_state=cfg.load_training_state)

    output_dir.mkdir(parents=True, exist_ok=True)
    config_dict = resolved_config(cfg)
    write_resolved_config(output_dir, config_dict)

    # W&B starts in the background (about a second) while the first iterations train.
    tracker = Tracker.start(config_dict, OmegaConf.to_object(cfg.logger), output_dir, background=True)
    result = TrainResult(output_dir=output_dir)
    announced = False

    def announce_run() -> None:
        nonlocal announced
        announced = True
        result.wandb_run_id = tracker.run_id
        result.wandb_run_dir = str(tracker.run_dir) if tracker.run_dir else None
        if callbacks.on_start:
            callbacks.on_start({"wandb_run_id": result.wandb_run_id, "wandb_run_dir": result.wandb_run_dir,
                                "output_dir": str(output_dir)})

    best = -float("inf")
    trial = OmegaConf.select(cfg, "trial.number", default=None)
    progress = Progress(agent.max_epochs, log, label=f"trial {trial}" if trial is not None else "")

    def on_iteration(member: int, metrics: dict[str, float]) -> None:
        nonlocal best
        tracker.log(metrics)
        if not announced and tracker.started:
            announce_run()
        result.history.append(metrics)
        if EVAL.episode_reward in metrics:
            result.final_eval_return = metrics[EVAL.episode_reward]
            best = max(best, metrics[EVAL.episode_reward])
            result.best_eval_return = best
        progress.update(agent.epoch, agent.step_count, metrics)
        if callbacks.on_iteration:
            callbacks.on_iteration(agent.epoch, metrics)

    stopped_by: BaseException | None = None
    try:
        agent.fit(on_iteration)
    except BaseException as exc:
        stopped_by = exc
        raise
    finally:
        progress.close()
        result.frames = agent.step_count
        extra, exit_code = callbacks.on_end(stopped_by) if callbacks.on_end else ({}, int(stopped_by is not None))
        tracker.update_summary(extra)  # the tracker writes frames, wall time and the returns itself
        tracker.finish(exit_code)
        if not announced:
            announce_run()
        # a W&B failure mid-run moves the metrics to a fallback offline run with a new id
        result.wandb_run_id = tracker.run_id
        result.wandb_run_dir = str(tracker.run_dir) if tracker.run_dir else None
    return result
