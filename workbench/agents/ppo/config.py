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
    mu_key: str = MISSING  # TensorDict key that holds the action mean
    in_keys: List[str] = field(default_factory=list)
    out_keys: List[str] = field(default_factory=lambda: ["action", "mean_action", "neglogp"])
    _target_: str = "workbench.agents.ppo.model.PPOActor"
    # any module config (usually an MLPWithConcatConfig or a ModuleContainerConfig), as in ProtoMotions;
    # typed Any so a YAML file may give any of them here (workbench.config.register_configs)
    mu_model: Any = field(default_factory=ModuleContainerConfig)
    num_out: Optional[int] = None  # action dim; filled from the env when None
    actor_logstd: float = -2.9
    learnable_std: bool = False


@dataclass
class PPOModelConfig(BaseModelConfig):
    _target_: str = "workbench.agents.ppo.model.PPOModel"
    out_keys: List[str] = field(default_factory=lambda: ["action", "mean_action", "neglogp", "value"])
    actor: PPOActorConfig = field(default_factory=PPOActorConfig)
    critic: Any = field(default_factory=ModuleContainerConfig)  # any module config, as mu_model
    actor_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=2e-5))
    critic_optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-4))


@dataclass
class AdvantageNormalizationConfig:
    enabled: bool = True
    shift_mean: bool = True
    use_ema: bool = True
    ema_alpha: float = 0.05
    min_std: float = 0.02
    clamp_range: float = 4.0


@dataclass
class L2C2Config:
    enabled: bool = False
    lambda_l2c2: float = 0.1
    obs_pairs: Dict[str, str] = field(default_factory=dict)  # noisy key -> clean key


@dataclass
class AdaptiveLRConfig:
    enabled: bool = False
    desired_kl: float = 0.01
    min_lr: float = 1e-5
    max_lr: float = 1e-2


@dataclass
class PPOAgentConfig(BaseAgentConfig):
    _target_: str = "workbench.agents.ppo.agent.PPO"
    model: PPOModelConfig = field(default_factory=PPOModelConfig)
    tau: float = 0.95
    e_clip: float = 0.2
    clip_critic_loss: bool = True
    actor_clip_frac_threshold: Optional[float] = 0.6
    entropy_coef: float = 0.005
    l2c2: L2C2Config = field(default_factory=L2C2Config)
    adaptive_lr: AdaptiveLRConfig = field(default_factory=AdaptiveLRConfig)
    advantage_normalization: AdvantageNormalizationConfig = field(default_factory=AdvantageNormalizationConfig)
