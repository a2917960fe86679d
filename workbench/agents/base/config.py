"""Agent-level configs shared by every agent (ProtoMotions' BaseAgentConfig surface)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import MISSING

from workbench.agents.common.config import BaseModelConfig


@dataclass
class EvaluatorConfig:
    _target_: str = "workbench.agents.common.evaluator.Evaluator"
    # name -> {"static_params": {"threshold": float, "fail_above": bool}}; the value is read
    # from the env's step extras under that name. Thresholded components give success_rate.
    evaluation_components: Dict[str, Any] = field(default_factory=dict)
    max_eval_steps: int = 600
    eval_metrics_every: Optional[int] = 200  # None = off (a final evaluation still runs)
    num_envs: Optional[int] = None  # workbench addition: eval env count (None = min(64, training envs))


@dataclass
class MaxEpisodeLengthManagerConfig:
    start_length: int = 5
    end_length: int = 300
    transition_epochs: int = 100000


@dataclass
class BaseAgentConfig:
    batch_size: int = MISSING
    training_max_steps: int = MISSING
    training_max_iterations: Optional[int] = None
    _target_: str = "workbench.agents.base_agent.BaseAgent"
    model: Any = field(default_factory=BaseModelConfig)
    num_steps: int = 32
    gradient_clip_val: float = 0.0
    fail_on_bad_grads: bool = False
    check_grad_mag: bool = True
    gamma: float = 0.99
    bounds_loss_coef: float = 0.0
    task_reward_w: float = 1.0
    num_mini_epochs: int = 1
    training_early_termination: Optional[int] = None  # stop once step_count reaches it (workbench: implemented)
    save_epoch_checkpoint_every: Optional[int] = 1000
    save_last_checkpoint_every: int = 10
    save_inference_checkpoint: bool = False
    max_episode_length_manager: Optional[MaxEpisodeLengthManagerConfig] = None
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    normalize_rewards: bool = True
    normalized_reward_clamp_value: float = 5.0
    reward_norm_ema_decay: Optional[float] = None
