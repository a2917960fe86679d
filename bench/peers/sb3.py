"""Stable-Baselines3 PPO on a Gymnasium env, with VecNormalize (obs and reward) as CleanRL normalises."""
from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from bench.workloads import Workload

ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


class Trainer:
    name = "sb3"

    def __init__(self, workload: Workload, seed: int = 0):
        if workload.env != "halfcheetah":
            raise ValueError(f"sb3 runs Gymnasium envs only, not {workload.env!r}")
        w = workload
        venv = DummyVecEnv([lambda: gym.make(w.gym_id) for _ in range(w.num_envs)])
        venv = VecNormalize(venv, norm_obs=w.normalize_obs, norm_reward=True, clip_obs=10.0, gamma=w.gamma)
        policy_kwargs = {"net_arch": {"pi": list(w.hidden), "vf": list(w.hidden)},
                         "activation_fn": ACTIVATIONS[w.activation], "log_std_init": w.init_logstd}
        self.model = PPO("MlpPolicy", venv, learning_rate=w.lr, n_steps=w.num_steps, batch_size=w.minibatch_size,
                         n_epochs=w.epochs, gamma=w.gamma, gae_lambda=w.lam, clip_range=w.clip, ent_coef=0.0,
                         vf_coef=0.5, max_grad_norm=w.grad_clip, policy_kwargs=policy_kwargs, seed=seed,
                         device="cpu", verbose=0)
        if not w.learnable_std:
            self.model.policy.log_std.requires_grad_(False)
        self.steps_per_iteration = w.steps_per_iteration
        self.steps = 0

    def iterate(self, n: int) -> None:
        self.model.learn(total_timesteps=n * self.steps_per_iteration, reset_num_timesteps=self.steps == 0)
        self.steps = self.model.num_timesteps

    def close(self) -> None:
        self.model.get_env().close()
