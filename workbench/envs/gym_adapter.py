"""Gymnasium vector envs (MuJoCo and classic control) behind the batched env protocol.

- Resets are lazy, as in the torch-native envs: the vector env runs with
  autoreset DISABLED and ``reset(env_ids)`` resets exactly those envs through
  gymnasium's ``reset_mask`` option. ``step`` returns the final (pre-reset) obs.
- Actions: the policy emits unbounded Gaussian actions. Each dimension is clipped
  to [-1, 1], then mapped affinely onto the Box bounds [low, high]
  (-1 -> low, +1 -> high). Dimensions with an infinite bound are only clipped.
- ``terminated`` is gymnasium's ``terminated`` (a true terminal state). ``truncated``
  is gymnasium's ``truncated`` (its TimeLimit, the spec's max_episode_steps) or the
  adapter's own step counter reaching the mutable ``max_episode_length``; never both:
  a terminal state wins. Raising ``max_episode_length`` above the spec's limit does
  not lengthen episodes, as gymnasium's TimeLimit still cuts them.
- Seeding: the first reset seeds sub-env i with ``seed + i``; later resets draw from
  each sub-env's own RNG, so a run is deterministic given ``seed``.
- ``state_dict`` holds the step counters, ``max_episode_length`` and each sub-env's
  RNG state. The simulator state (MuJoCo qpos/qvel, ...) is NOT restored: after a
  resume, reset all envs (the agent does) and episodes continue from fresh starts.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from workbench.envs.base import StepResult, as_env_ids


class GymVectorEnv:
    def __init__(self, gym_id: str, num_envs: int = 8, max_episode_length: int | None = None,
                 device: str | torch.device = "cpu", seed: int = 0,
                 vectorization_mode: str = "sync", env_kwargs: Mapping[str, Any] | None = None):
        if vectorization_mode not in ("sync", "async"):
            raise ValueError(f"vectorization_mode must be 'sync' or 'async', got {vectorization_mode!r}")
        self.gym_id = gym_id
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.seed = seed
        self.envs = gym.make_vec(
            gym_id, num_envs=num_envs, vectorization_mode=vectorization_mode,
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.DISABLED},
            **dict(env_kwargs or {}))

        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, gym.spaces.Box):
            self.envs.close()
            raise ValueError(f"{gym_id}: only Box observation and action spaces are supported, "
                             f"got {obs_space} and {act_space}")
        self.obs_dim = int(np.prod(obs_space.shape))
        self.action_dim = int(np.prod(act_space.shape))
        self.action_low = torch.as_tensor(act_space.low, dtype=torch.float32, device=self.device).reshape(-1)
        self.action_high = torch.as_tensor(act_space.high, dtype=torch.float32, device=self.device).reshape(-1)
        # env action = mid + clip(a) * half_range: low + (a + 1)/2 (high - low) in one op; an
        # unbounded dimension gets (0, 1), so it passes the clipped value
        bounded = torch.isfinite(self.action_low) & torch.isfinite(self.action_high)
        half_range = 0.5 * (self.action_high - self.action_low)
        self._action_half_range = torch.where(bounded, half_range, torch.ones_like(half_range))
        self._action_mid = torch.where(bounded, self.action_low + half_range, torch.zeros_like(half_range))
        self._action_shape = (num_envs, *act_space.shape)
        self._action_dtype = act_space.dtype

        spec_limit = self.envs.spec.max_episode_steps if self.envs.spec is not None else None
        if max_episode_length is None:
            max_episode_length = spec_limit if spec_limit is not None else 1000
        self.max_episode_length = max_episode_length
        self.dt = float(self.envs.get_attr("dt")[0]) if _has_dt(self.envs) else 1.0

        # per-env bookkeeping in numpy: the simulator is on the CPU anyway, and a numpy op on a
        # few envs costs a fraction of a torch op's dispatch
        self._progress = np.zeros(num_envs, dtype=np.int64)
        self._on_cpu = self.device.type == "cpu"
        obs, _ = self.envs.reset(seed=seed)
        self._set_obs(obs)

    def scale_action(self, action: torch.Tensor) -> torch.Tensor:
        """Clip to [-1, 1] and map onto the Box bounds; infinite bounds pass the clipped value."""
        action = action.reshape(self.num_envs, self.action_dim).clamp(-1.0, 1.0)
        return torch.addcmul(self._action_mid, action, self._action_half_range)

    @property
    def progress(self) -> torch.Tensor:
        """Steps since each env's last reset (a CPU view of the adapter's counters)."""
        return torch.from_numpy(self._progress)

    def reset(self, env_ids: torch.Tensor | None = None) -> TensorDict:
        ids = as_env_ids(env_ids, self.num_envs, self.device)
        if ids.numel():
            mask = np.zeros(self.num_envs, dtype=np.bool_)
            mask[ids.cpu().numpy()] = True
            obs, _ = self.envs.reset(options={"reset_mask": mask})
            self._set_obs(obs)
            self._progress[mask] = 0
        return self.get_obs()

    def get_obs(self) -> TensorDict:
        # one TensorDict per observation, shared by step() and the next reset() of no env;
        # callers clone it before writing into it (the agent does)
        return self._obs_td

    def _set_obs(self, obs: np.ndarray) -> None:
        # np.array copies: the tensors must not alias buffers the vector env may reuse
        flat = self._tensor(np.array(obs, dtype=np.float32).reshape(self.num_envs, -1))
        self._obs_td = TensorDict({"obs": flat}, batch_size=[self.num_envs], device=self.device)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor if self._on_cpu else tensor.to(self.device)

    def step(self, action: torch.Tensor) -> StepResult:
        env_action = self.scale_action(action).detach().cpu().numpy().astype(self._action_dtype, copy=False)
        obs, reward, gym_terminated, gym_truncated, _ = self.envs.step(env_action.reshape(self._action_shape))
        self._set_obs(obs)
        self._progress += 1

        terminated = np.array(gym_terminated, dtype=np.bool_)
        truncated = (np.asarray(gym_truncated, dtype=np.bool_) | (self._progress >= self.max_episode_length)) & ~terminated
        terminated_t = self._tensor(terminated)
        terminate = terminated_t.float()
        extras = {"terminate": terminate, "termination/env": terminate}
        return StepResult(self._obs_td, self._tensor(np.array(reward, dtype=np.float32)), terminated_t,
                          self._tensor(truncated), extras)

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def state_dict(self) -> dict:
        rngs = self.envs.get_attr("np_random")
        return {"progress": torch.from_numpy(self._progress.copy()), "max_episode_length": self.max_episode_length,
                "np_random": [rng.bit_generator.state for rng in rngs]}

    def load_state_dict(self, state: dict) -> None:
        self._progress[:] = state["progress"].cpu().numpy()
        self.max_episode_length = state["max_episode_length"]
        rngs = []
        for rng_state in state["np_random"]:
            bit_generator = getattr(np.random, rng_state["bit_generator"])()
            bit_generator.state = rng_state
            rngs.append(np.random.Generator(bit_generator))
        self.envs.set_attr("np_random", rngs)

    def close(self) -> None:
        self.envs.close()


def _has_dt(envs: gym.vector.VectorEnv) -> bool:
    try:
        envs.get_attr("dt")
    except AttributeError:
        return False
    return True
