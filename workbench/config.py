"""The root config schema (registered with Hydra's ConfigStore) and value validation.

Hydra and OmegaConf already refuse unknown keys and wrong types while composing;
``validate`` adds the range checks, so every bad value is refused with the key,
the value and what is allowed, before anything is built or written.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from workbench.agents import targets
from workbench.agents.common.member_adam import ADAM_TARGETS
from workbench.agents.ppo.config import PPOAgentConfig
from workbench.tracking.config import LoggerConfig

DEVICES = ("cpu", "cuda", "auto")
LOGGER_MODES = ("offline", "online", "disabled")


@dataclass
class PopulationConfig:
    """P agents trained side by side as one batched computation (one W&B run and output dir each).

    ``seeds``: one member per seed. ``size``: seeds seed .. seed + size - 1. ``members``: per-member
    overrides (a mapping of dotted config keys to values, one per member; a population file in
    ``conf/population/`` holds them), which may change only the knobs listed in
    ``workbench.agents.ppo.population.PER_MEMBER`` and ``seed``. Nothing set: a single run."""
    seeds: Optional[List[int]] = None  # one member per seed
    size: Optional[int] = None  # members seed .. seed + size - 1
    members: List[Any] = field(default_factory=list)  # per-member overrides, {dotted key: value} each
    name: Optional[str] = None  # the members' W&B group; default: the run directory's name


@dataclass
class WorkbenchConfig:
    agent: PPOAgentConfig = field(default_factory=PPOAgentConfig)  # conf/agent/ppo.yaml, then conf/tuning/<env>.yaml
    # a config group (conf/env/): _target_ (the env class) and its constructor's keyword arguments, e.g.
    # num_envs (envs stepped side by side) and max_episode_length; checked against the signature
    env: Any = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # W&B
    seed: int = 0  # seeds the weights, action noise, minibatch order and envs (a population's members: see population)
    device: str = "cpu"  # cpu | cuda | auto
    # 1 by default: with more threads than free cores (a shared machine, sweep workers) torch's OpenMP
    # threads wait on each other and a run slows 10-30x; one thread cannot collapse like that, and
    # the workbench's small networks gain little from more. None = torch's default (every core).
    torch_threads: Optional[int] = 1
    checkpoint: Optional[str] = None  # a .ckpt to start from; <output_dir>/last.ckpt is resumed automatically
    load_training_state: bool = True  # false = warm start (weights only)
    trial: Optional[Any] = None  # filled by the Optuna sweeper for sweep trials
    population: PopulationConfig = field(default_factory=PopulationConfig)
    extra: Dict[str, Any] = field(default_factory=dict)  # free-form user notes (+extra.note=...); logged, not read


# The networks a config file gives whole. As structured nodes they would take the type of their
# default (ModuleContainerConfig) and refuse an MLPWithConcat given in its place, as ProtoMotions'
# configs give it; empty in the schema, any module config fills them (one without a _target_ is a
# ModuleContainerConfig, the declared type), and ``validate`` checks it.
NETWORK_KEYS = ("agent.model.actor.mu_model", "agent.model.critic")


def schema() -> DictConfig:
    """The root config schema Hydra composes onto (``base_config``)."""
    node = OmegaConf.structured(WorkbenchConfig)
    for key in NETWORK_KEYS:
        OmegaConf.update(node, key, None, merge=False)
    return node


def register_configs() -> None:
    ConfigStore.instance().store(name="base_config", node=schema())


class ConfigError(ValueError):
    """A config value outside what is allowed; names the key, the value and the rule."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigError(key, "???", "a value is required (set it on the command line, e.g. "
                                      f"{key}=...)") from None


def _check(cfg, key, ok, allowed):
    value = _get(cfg, key)
    if value is not None and not ok(value):
        raise ConfigError(key, value, allowed)


RANGE_CHECKS = [
    ("agent.e_clip", lambda v: v > 0, "must be > 0"),
    ("agent.tau", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ("agent.gamma", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ("agent.batch_size", lambda v: v >= 1, "must be >= 1"),
    ("agent.training_max_steps", lambda v: v >= 1, "must be >= 1"),
    ("agent.training_max_iterations", lambda v: v >= 1, "must be >= 1 or null"),
    ("agent.num_steps", lambda v: v >= 1, "must be >= 1"),
    ("agent.num_mini_epochs", lambda v: v >= 1, "must be >= 1"),
    ("agent.gradient_clip_val", lambda v: v >= 0, "must be >= 0 (0 disables clipping)"),
    ("agent.bounds_loss_coef", lambda v: v >= 0, "must be >= 0"),
    ("agent.entropy_coef", lambda v: v >= 0, "must be >= 0"),
    ("agent.actor_clip_frac_threshold", lambda v: 0 < v <= 1, "must be in (0, 1] or null"),
    ("agent.normalized_reward_clamp_value", lambda v: v > 0, "must be > 0"),
    ("agent.reward_norm_ema_decay", lambda v: 0 < v < 1, "must be in (0, 1) or null"),
    ("agent.save_last_checkpoint_every", lambda v: v >= 0, "must be >= 0 (0 disables)"),
    ("agent.save_epoch_checkpoint_every", lambda v: v >= 0, "must be >= 0 or null"),
    ("agent.training_early_termination", lambda v: v >= 1, "must be >= 1 or null"),
    ("agent.model.actor.actor_logstd", math.isfinite, "must be a finite number"),
    ("agent.model.actor_optimizer.lr", lambda v: v > 0, "must be > 0"),
    ("agent.model.critic_optimizer.lr", lambda v: v > 0, "must be > 0"),
    ("agent.advantage_normalization.ema_alpha", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("agent.advantage_normalization.min_std", lambda v: v > 0, "must be > 0"),
    ("agent.advantage_normalization.clamp_range", lambda v: v > 0, "must be > 0"),
    ("agent.adaptive_lr.desired_kl", lambda v: v > 0, "must be > 0"),
    ("agent.evaluator.max_eval_steps", lambda v: v >= 1, "must be >= 1"),
    ("agent.evaluator.eval_metrics_every", lambda v: v >= 1, "must be >= 1 or null"),
    ("agent.evaluator.num_envs", lambda v: v >= 1, "must be >= 1 or null"),
    ("env.num_envs", lambda v: v >= 1, "must be >= 1"),
    ("device", lambda v: v in DEVICES, f"must be one of {', '.join(DEVICES)}"),
    ("logger.mode", lambda v: str(v).lower() in (*LOGGER_MODES, "dryrun", "run"), f"must be one of {', '.join(LOGGER_MODES)}"),
    ("logger.init_timeout", lambda v: v > 0, "must be > 0 (seconds)"),
    ("torch_threads", lambda v: v >= 1, "must be >= 1 or null"),
    ("agent.model.actor_optimizer._target_", lambda v: v in ADAM_TARGETS, f"must be one of {', '.join(ADAM_TARGETS)}"),
    ("agent.model.critic_optimizer._target_", lambda v: v in ADAM_TARGETS, f"must be one of {', '.join(ADAM_TARGETS)}"),
    ("population.size", lambda v: v >= 1, "must be >= 1 or null"),
    ("population.seeds", lambda v: len(v) >= 1, "must list at least one seed, or be null"),
]


# Every _target_ of the agent's configs, besides the networks' (checked with them) and the
# optimizers' (RANGE_CHECKS): the workbench class or its ProtoMotions path (workbench.agents.targets).
TARGET_CHECKS = (
    ("agent._target_", targets.PPO_AGENT), ("agent.model._target_", targets.PPO_MODEL),
    ("agent.model.actor._target_", targets.PPO_ACTOR), ("agent.evaluator._target_", targets.EVALUATOR),
)


def check_networks(cfg: DictConfig) -> None:
    """Each network config builds (known targets and keys, valid values, keys that flow) and writes
    what the agent reads from it: the actor's ``mu_key``, the critic's ``value``."""
    from workbench.agents.common.config import ModuleContainerConfig
    from workbench.agents.common.modules import ModuleConfigError, produced_keys, to_config  # torch

    for key, reads in zip(NETWORK_KEYS, (_get(cfg, "agent.model.actor.mu_key"), "value")):
        spec = _get(cfg, key)
        if spec is None:
            raise ConfigError(key, None, "a network is required: a module config whose _target_ is "
                                         "MLPWithConcat, ModuleContainer or ObsProcessor")
        try:
            # a mapping without _target_ is the field's declared type, a ModuleContainerConfig
            network = to_config(OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec,
                                key, default=ModuleContainerConfig)
        except ModuleConfigError as err:
            raise ConfigError(err.where, err.value, err.allowed) from None
        written = produced_keys(network)
        if reads not in written:
            raise ConfigError(f"{key}.out_keys", list(network.out_keys),
                              f"the network must write {reads!r}, which the agent reads (it writes {', '.join(written)})")


def check_known_keys(node: Any, path: str = "") -> None:
    """Refuse keys a schema node does not declare. Struct mode stops ``agent.foo=1``, but
    Hydra opens the node for ``+agent.foo=1``, which would then be carried along unread."""
    if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
        return
    schema = OmegaConf.get_type(node)
    declared = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        full = f"{path}{key}"
        if declared is not None and key not in declared and not (path == "" and key == "hydra"):
            hint = "; free-form notes go under +extra.<name>" if path == "" else ""
            close = difflib.get_close_matches(str(key), sorted(declared), n=1)
            guess = f"did you mean {path}{close[0]}? " if close else ""
            raise ConfigError(full, _plain_value(node._get_node(key)),
                              f"{guess}not a key of {schema.__name__} (known keys: "
                              f"{', '.join(sorted(declared))}){hint}")
        if key != "hydra":
            check_known_keys(node._get_node(key), f"{full}.")


def _plain_value(node: Any) -> Any:
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node._value()


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (or EnvConfigError) for the first unknown key, mistyped env value or
    value outside its allowed range."""
    from workbench.envs import check_env_config  # torch: only once a config is checked

    check_known_keys(cfg)
    check_env_config(OmegaConf.to_container(cfg.env, resolve=True) if isinstance(cfg.env, DictConfig) else cfg.env)
    for key, ok, allowed in RANGE_CHECKS:
        _check(cfg, key, ok, allowed)
    for key, target in TARGET_CHECKS:
        accepted = targets.accepted_targets(target)
        _check(cfg, key, lambda v, ok=accepted: v in ok, f"must be one of {', '.join(accepted)}")
    check_networks(cfg)
    l2c2, actor_inputs = cfg.agent.l2c2, list(cfg.agent.model.actor.in_keys)
    if l2c2.enabled and not any(key in actor_inputs for key in l2c2.obs_pairs):
        raise ConfigError("agent.l2c2.obs_pairs", OmegaConf.to_container(l2c2.obs_pairs),
                          f"with l2c2.enabled, at least one noisy key must be an actor input "
                          f"(agent.model.actor.in_keys: {', '.join(actor_inputs)}), mapped to its clean key")
    adaptive = cfg.agent.adaptive_lr
    if adaptive.min_lr > adaptive.max_lr:
        raise ConfigError("agent.adaptive_lr.min_lr", adaptive.min_lr, f"must be <= max_lr ({adaptive.max_lr})")
    rollout = cfg.env.num_envs * cfg.agent.num_steps
    if rollout % cfg.agent.batch_size:
        raise ConfigError("agent.batch_size", cfg.agent.batch_size,
                          f"must divide env.num_envs x agent.num_steps = {cfg.env.num_envs} x "
                          f"{cfg.agent.num_steps} = {rollout}")
    if cfg.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("device", "cuda", "CUDA is not available on this machine; use cpu or auto")
