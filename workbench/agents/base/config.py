"""Agent-level configs shared by every agent (ProtoMotions' BaseAgentConfig surface)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import MISSING

from workbench.agents.common.config import BaseModelConfig


@dataclass
class EvaluatorConfig:
    _target_: str = "workbench.agents.common.evaluator.Evaluator"  # the evaluator class built
    # name -> {"static_params": {"threshold": float, "fail_above": bool}}; the value is read
    # from the env's step extras under that name. Thresholded components give success_rate.
    evaluation_components: Dict[str, Any] = field(default_factory=dict)
    max_eval_steps: int = 600  # env steps of one evaluation, acting with the mean action
    eval_metrics_every: Optional[int] = 200  # evaluate every N iterations; None = off (a final evaluation still runs)
    num_envs: Optional[int] = None  # workbench addition: eval env count (None = min(64, training envs))


@dataclass
class MaxEpisodeLengthManagerConfig:
    """Episode-length curriculum: the env's max_episode_length ramps linearly with the iteration."""
    start_length: int = 5  # the limit at iteration 0
    end_length: int = 300  # the limit from transition_epochs on
    transition_epochs: int = 100000  # iterations ("epochs") the ramp takes; 0 = start_length throughout


@dataclass
class BaseAgentConfig:
    """What every agent shares. Vocabulary, as in ProtoMotions: an "epoch" is one iteration (one
    rollout of num_steps steps from every env, then the updates on it), and a "step" is one env
    step of one env (frames: step_count grows by num_envs x num_steps per iteration)."""
    batch_size: int = MISSING  # minibatch size (samples per gradient step); must divide num_envs x num_steps
    training_max_steps: int = MISSING  # env steps to train: iterations = training_max_steps // num_envs // num_steps
    training_max_iterations: Optional[int] = None  # if set, the number of iterations instead (it wins)
    _target_: str = "workbench.agents.base_agent.BaseAgent"  # the agent class built
    model: Any = field(default_factory=BaseModelConfig)  # the networks (PPOModelConfig for PPO)
    num_steps: int = 32  # rollout length: steps per env per iteration
    gradient_clip_val: float = 0.0  # clip each network's total gradient L2 norm to this; 0 = off
    # true: a bad gradient (non-finite norm, or > 1e6 with check_grad_mag) raises; false: that network's
    # optimizer step is skipped and counted in <network>/bad_grads_count
    fail_on_bad_grads: bool = False
    check_grad_mag: bool = True  # also treat a norm > 1e6 as bad, and log per-layer gradient norms (grad_layers/)
    gamma: float = 0.99  # discount, in GAE and in the reward normaliser's return
    bounds_loss_coef: float = 0.0  # weight of the soft penalty on action means outside [-1, 1]; 0 = off
    task_reward_w: float = 1.0  # multiplies the advantages after GAE (the critic's returns are not scaled)
    # passes over each rollout per iteration (ceil(num_envs x num_steps x num_mini_epochs / batch_size)
    # minibatches); not to be confused with "epoch", which counts iterations
    num_mini_epochs: int = 1
    training_early_termination: Optional[int] = None  # stop once step_count reaches it (workbench: implemented)
    save_epoch_checkpoint_every: Optional[int] = 1000  # write epoch_<N>.ckpt every N iterations; None or 0 = off
    save_last_checkpoint_every: int = 10  # overwrite last.ckpt every N iterations (and at the end); 0 = off
    save_inference_checkpoint: bool = False  # with each last.ckpt also write inference_last.ckpt (weights, counters)
    max_episode_length_manager: Optional[MaxEpisodeLengthManagerConfig] = None  # the curriculum; None = off
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    # divide rewards by the running std of each env's discounted return (no mean shift); the critic then
    # predicts normalised returns, and GAE runs on rewards and values in raw units
    normalize_rewards: bool = True
    normalized_reward_clamp_value: float = 5.0  # clamp (+-) of normalised rewards, returns and value predictions
    reward_norm_ema_decay: Optional[float] = None  # the return statistics: None = all-time (Welford), d = EMA decay
