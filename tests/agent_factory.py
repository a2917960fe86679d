"""Small builders shared by the agent tests: tiny MLP configs, tiny PPO agents, a scripted env.

Everything here is sized so that one agent iteration takes milliseconds on one CPU thread.
"""
from __future__ import annotations

import torch
from tensordict import TensorDict

from workbench.agents.base.config import EvaluatorConfig, MaxEpisodeLengthManagerConfig
from workbench.agents.common.config import MLPLayerConfig, MLPWithConcatConfig, ModuleContainerConfig, OptimizerConfig
from workbench.agents.common.flat_params import quiet_layout_warning
from workbench.agents.ppo.agent import PPO
from workbench.agents.ppo.config import (AdaptiveLRConfig, AdvantageNormalizationConfig, PPOActorConfig,
                                         PPOAgentConfig, PPOModelConfig)
from workbench.envs.base import StepResult
from workbench.envs.pendulum import Pendulum


def mlp(out_key: str, num_out: int, units: int = 8, in_keys=("obs",), normalize_obs: bool = False,
        activation: str = "tanh") -> ModuleContainerConfig:
    """A one-hidden-layer MLPWithConcat wrapped in a container, as the examples do."""
    return ModuleContainerConfig(
        in_keys=list(in_keys), out_keys=[out_key],
        models=[MLPWithConcatConfig(num_out=num_out, in_keys=list(in_keys), out_keys=[out_key],
                                    layers=[MLPLayerConfig(units, activation)], normalize_obs=normalize_obs)])


def actor_config(num_out: int = 1, actor_logstd: float = -0.5, learnable_std: bool = False,
                 units: int = 8, normalize_obs: bool = False) -> PPOActorConfig:
    return PPOActorConfig(mu_key="mu", in_keys=["obs"], mu_model=mlp("mu", num_out, units, normalize_obs=normalize_obs),
                          num_out=num_out, actor_logstd=actor_logstd, learnable_std=learnable_std)


def model_config(num_out: int = 1, actor_logstd: float = -0.5, learnable_std: bool = False, actor_lr: float = 1e-3,
                 critic_lr: float = 1e-3, units: int = 8, normalize_obs: bool = False) -> PPOModelConfig:
    return PPOModelConfig(in_keys=["obs"],
                          actor=actor_config(num_out, actor_logstd, learnable_std, units, normalize_obs),
                          critic=mlp("value", 1, units, normalize_obs=normalize_obs),
                          actor_optimizer=OptimizerConfig(lr=actor_lr), critic_optimizer=OptimizerConfig(lr=critic_lr))


def agent_config(*, num_out: int = 1, actor_logstd: float = -0.5, learnable_std: bool = False,
                 actor_lr: float = 1e-3, critic_lr: float = 1e-3, units: int = 8, normalize_obs: bool = False,
                 adv_norm: AdvantageNormalizationConfig | None = None, adaptive_lr: AdaptiveLRConfig | None = None,
                 evaluator: EvaluatorConfig | None = None,
                 episode_manager: MaxEpisodeLengthManagerConfig | None = None, **fields) -> PPOAgentConfig:
    """A PPOAgentConfig with tiny networks; ``fields`` set any PPOAgentConfig field directly."""
    fields.setdefault("batch_size", 8)
    fields.setdefault("training_max_steps", 10_000)
    fields.setdefault("num_steps", 4)
    fields.setdefault("save_epoch_checkpoint_every", None)
    fields.setdefault("save_last_checkpoint_every", 0)
    return PPOAgentConfig(
        model=model_config(num_out, actor_logstd, learnable_std, actor_lr, critic_lr, units, normalize_obs),
        advantage_normalization=adv_norm or AdvantageNormalizationConfig(),
        adaptive_lr=adaptive_lr or AdaptiveLRConfig(),
        evaluator=evaluator or EvaluatorConfig(eval_metrics_every=None, max_eval_steps=10),
        max_episode_length_manager=episode_manager, **fields)


def make_agent(num_envs: int = 4, env=None, eval_env=None, seed: int = 0, output_dir=None, **kwargs) -> PPO:
    """A PPO on a tiny Pendulum (or ``env``); kwargs go to ``agent_config``."""
    torch.manual_seed(seed)
    env = env if env is not None else Pendulum(num_envs, seed=seed)
    return PPO(agent_config(**kwargs), env, eval_env=eval_env, output_dir=output_dir, seed=seed)


def apply_gradients(agent: PPO, name: str, loss: torch.Tensor) -> dict:
    """Backward one network's loss alone (per member, [P]; summed: members share no parameters),
    then let the agent check, clip and step that network for every active member.

    Returns member 0's logs (0-d tensors), the single agent's view."""
    agent.flat[name].zero_grad()
    with quiet_layout_warning():
        loss.sum().backward()
    out = {}
    for key, value in agent.step_network(name, agent.active).items():
        if isinstance(key, tuple):  # a [P, layers] block of per-layer norms
            out.update({k: value[0, i] for i, k in enumerate(key)})
        else:
            out[key] = value.reshape(-1)[0]
    return out


def member_obs(obs: torch.Tensor) -> TensorDict:
    """``obs`` ([B, D]) as the single agent's member view: a [1, B] TensorDict."""
    return TensorDict({"obs": obs.unsqueeze(0)}, batch_size=[1, obs.shape[0]])


def params_snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def same_params(module: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, snapshot[n]) for n, p in module.named_parameters())


class ScriptedEnv:
    """A deterministic batched env with terminations AND truncations at known steps.

    Env ``i`` terminates when its episode progress reaches ``term_at[i]`` (0 = never) and is
    truncated at ``max_episode_length``. Observations are ``[progress/10, i/10, 1]``; rewards
    are ``1 + 0.1 * i + 0.01 * progress`` (progress after the step), so every value is known.
    """

    def __init__(self, num_envs: int = 4, term_at=(3, 0, 4, 0), max_episode_length: int = 4):
        self.num_envs = num_envs
        self.action_dim = 1
        self.device = torch.device("cpu")
        self.dt = 0.1
        self.max_episode_length = max_episode_length
        self.term_at = torch.tensor(list(term_at)[:num_envs], dtype=torch.long)
        self.progress = torch.zeros(num_envs, dtype=torch.long)
        self.ids = torch.arange(num_envs)
        self.resets = 0

    def get_obs(self) -> TensorDict:
        obs = torch.stack((self.progress.float() / 10, self.ids.float() / 10, torch.ones(self.num_envs)), -1)
        return TensorDict({"obs": obs}, batch_size=[self.num_envs])

    def reset(self, env_ids=None) -> TensorDict:
        ids = self.ids if env_ids is None else env_ids.long().reshape(-1)
        self.progress[ids] = 0
        return self.get_obs()

    def step(self, action: torch.Tensor) -> StepResult:
        self.progress += 1
        reward = 1.0 + 0.1 * self.ids.float() + 0.01 * self.progress.float()
        terminated = (self.term_at > 0) & (self.progress >= self.term_at)
        truncated = (self.progress >= self.max_episode_length) & ~terminated
        return StepResult(self.get_obs(), reward, terminated, truncated, {})

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"progress": self.progress.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.progress.copy_(state["progress"])

    def close(self) -> None:
        pass


def gae_loop(rewards, values, next_values, dones, gamma, tau):
    """Plain-Python GAE over [T][N] lists: the independent reference for compute_gae."""
    T, N = len(rewards), len(rewards[0])
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        following = 0.0
        for t in reversed(range(T)):
            delta = rewards[t][n] + gamma * next_values[t][n] - values[t][n]
            following = delta + gamma * tau * (0.0 if dones[t][n] else 1.0) * following
            adv[t][n] = following
    return adv
