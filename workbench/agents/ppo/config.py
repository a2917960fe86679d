"""The PPO configuration surface: ProtoMotions' PPOActorConfig, PPOModelConfig,
AdvantageNormalizationConfig and PPOAgentConfig, every field and default."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from workbench.agents.base.config import BaseAgentConfig
from workbench.agents.common.config import BaseModelConfig, ModuleContainerConfig, OptimizerConfig


@dataclass
class PPOActorConfig:
    """A Gaussian policy: mean from ``mu_model``, a state-independent std ``exp(logstd)``; actions
    are sampled as they are (no tanh, no clipping)."""
    mu_key: str = MISSING  # TensorDict key that holds the action mean (mu_model's output)
    in_keys: List[str] = field(default_factory=list)  # observation keys the actor reads
    out_keys: List[str] = field(default_factory=lambda: ["action", "mean_action", "neglogp"])  # keys it writes
    _target_: str = "workbench.agents.ppo.model.PPOActor"
    # the mean's network: any module config (usually an MLPWithConcatConfig or a ModuleContainerConfig), as in
    # ProtoMotions; typed Any so a YAML file may give any of them here (workbench.config.register_configs)
    mu_model: Any = field(default_factory=ModuleContainerConfig)
    num_out: Optional[int] = None  # action dim (the length of logstd); filled from the env when None
    actor_logstd: float = -2.9  # initial log std of every action dim (-2.9: std 0.055)
    # train logstd (then the entropy bonus applies); false: fixed, and the config's value wins over a checkpoint's
    learnable_std: bool = False


@dataclass
class PPOModelConfig(BaseModelConfig):
    """Actor and critic: separate networks, each with its own optimizer; no shared loss."""
    _target_: str = "workbench.agents.ppo.model.PPOModel"
    out_keys: List[str] = field(default_factory=lambda: ["action", "mean_action", "neglogp", "value"])
    actor: PPOActorConfig = field(default_factory=PPOActorConfig)
    critic: Any = field(default_factory=ModuleContainerConfig)  # any module config, as mu_model; writes `value`
    actor_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=2e-5))
    critic_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-4))


@dataclass
class AdvantageNormalizationConfig:
    """How the (task_reward_w-scaled) advantages are normalised before the updates."""
    enabled: bool = True  # false: train on the advantages as they are
    shift_mean: bool = True  # subtract the mean; false: scale only
    # true: z = (A - ema_mean) / max(ema_std, min_std) with the EMA statistics of earlier iterations,
    # clamped to +-clamp_range, then the EMA moves toward this rollout; false: this rollout's mean and std
    use_ema: bool = True
    ema_alpha: float = 0.05  # the EMA's step per iteration (time constant 1 / ema_alpha iterations)
    min_std: float = 0.02  # floor of the EMA std
    clamp_range: float = 4.0  # clamp (+-) of the EMA-normalised advantages


@dataclass
class L2C2Config:
    """L2C2 smoothness: penalise the actor's mean for moving more than its input between noisy and
    clean observations, lambda_l2c2 * out_dist / (in_dist + 1e-8), added to the actor loss."""
    enabled: bool = False
    lambda_l2c2: float = 0.1  # the penalty's weight
    obs_pairs: Dict[str, str] = field(default_factory=dict)  # noisy key -> clean key (an actor input's pair counts)


@dataclass
class AdaptiveLRConfig:
    """KL-driven learning rates for both networks, adjusted every minibatch."""
    enabled: bool = False
    desired_kl: float = 0.01  # KL > 2 x desired: both lrs / 1.5; 0 < KL < desired / 2: both lrs x 1.5
    min_lr: float = 1e-5  # floor
    max_lr: float = 1e-2  # ceiling


@dataclass
class PPOAgentConfig(BaseAgentConfig):
    _target_: str = "workbench.agents.ppo.agent.PPO"
    model: PPOModelConfig = field(default_factory=PPOModelConfig)
    tau: float = 0.95  # GAE lambda
    e_clip: float = 0.2  # PPO's ratio clip epsilon; also the clip width of the value loss
    clip_critic_loss: bool = True  # value loss max((V - R)^2, (V_clipped - R)^2); false: (V - R)^2
    # a minibatch whose clip fraction exceeds this stops every update (actor and critic) for the rest of
    # the iteration, that minibatch included; None = never
    actor_clip_frac_threshold: Optional[float] = 0.6
    entropy_coef: float = 0.005  # entropy bonus weight; used only with model.actor.learnable_std
    l2c2: L2C2Config = field(default_factory=L2C2Config)
    adaptive_lr: AdaptiveLRConfig = field(default_factory=AdaptiveLRConfig)
    advantage_normalization: AdvantageNormalizationConfig = field(default_factory=AdvantageNormalizationConfig)
