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
- Stepping a sub-env that ended (gymnasium's terminated or truncated) and was not reset
  raises ``RuntimeError``: there is no silent autoreset.
- ``state_dict`` holds the step counters, ``max_episode_length`` and each sub-env's
  RNG state. The simulator state (MuJoCo qpos/qvel, ...) is NOT restored: after a
  resume, reset all envs (the agent does) and episodes continue from fresh starts.
- Populations (``member_seeds``): one vector env of P x N sub-envs, sub-env j of member i
  (index ``i * N + j``) seeded ``member_seeds[i] + j``, as in member i's single env.
- Lean step: the sub-envs are built without PassiveEnvChecker and OrderEnforcing (they
  only police call order, and every sub-env is reset before its first step); gymnasium's
  TimeLimit stays, it is the truncation. In ``sync`` mode the adapter steps the sub-envs
  itself straight into float32 arrays, skipping the vector env's info merging and copies
  (``bench/gym_step_cost.py`` measures what that saves). HalfCheetah, Hopper and Walker2d (v5)
  are stepped by a batched kernel (``workbench.envs.mujoco_kernels``): the same MuJoCo calls per
  sub-env, the obs, reward and termination of all of them in a few numpy ops, bit for bit
  gymnasium's step. TimeLimit's truncation then comes from the adapter's step counter.
- ``skip_members`` (sync mode): the skipped members' sub-envs are not stepped at all (their
  obs stay, reward 0, no episode end), so an empty slot or a member not being evaluated costs
  no MuJoCo steps. Async mode steps every sub-env (the vector env steps them all at once).
"""
from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from workbench.envs.base import StepResult, as_env_ids
from workbench.envs.mujoco_kernels import kernel_for
from workbench.envs.population import MemberStateMixin, member_seed_list, skipped_list


class GymVectorEnv(MemberStateMixin):
    shared_state_keys = ("max_episode_length",)

    def __init__(self, gym_id: str, num_envs: int = 8, max_episode_length: int | None = None,
                 device: str | torch.device = "cpu", seed: int = 0,
                 vectorization_mode: str = "sync", env_kwargs: Mapping[str, Any] | None = None,
                 member_seeds: Sequence[int] | None = None):
        if vectorization_mode not in ("sync", "async"):
            raise ValueError(f"vectorization_mode must be 'sync' or 'async', got {vectorization_mode!r}")
        seeds = member_seed_list(seed, member_seeds)
        self.gym_id = gym_id
        self.num_members, self.member_num_envs = len(seeds), num_envs
        self.num_envs = num_envs = num_envs * len(seeds)
        self.device = torch.device(device)
        self.seed = seed
        self.envs = _make_vec(gym_id, num_envs, vectorization_mode, env_kwargs)
        # sync: the adapter steps the sub-envs itself (see the module docstring)
        self._sub_envs = self.envs.envs if vectorization_mode == "sync" else None
        # ... and through a batched kernel where there is one: (kernel, TimeLimit steps) or None
        self._kernel = kernel_for(self._sub_envs) if self._sub_envs is not None else None

        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, gym.spaces.Box):
            self.envs.close()
            raise ValueError(f"{gym_id}: only Box observation and action spaces are supported, "
                             f"got {obs_space} and {act_space}")
        self.obs_dim = int(np.prod(obs_space.shape))
        self.action_dim = int(np.prod(act_space.shape))
        self.action_low = act_space.low.astype(np.float32).reshape(-1)
        self.action_high = act_space.high.astype(np.float32).reshape(-1)
        # env action = mid + clip(a) * half_range: low + (a + 1)/2 (high - low); an unbounded
        # dimension gets (0, 1), so it passes the clipped value. numpy, not torch: the action
        # goes to the CPU simulator anyway, and a numpy op on a few envs costs less dispatch.
        with np.errstate(invalid="ignore", over="ignore"):
            bounded = np.isfinite(self.action_low) & np.isfinite(self.action_high)
            half_range = 0.5 * (self.action_high - self.action_low)
            self._action_half_range = np.where(bounded, half_range, 1.0).astype(np.float32)
            self._action_mid = np.where(bounded, self.action_low + half_range, 0.0).astype(np.float32)
        self._action = np.empty((num_envs, self.action_dim), dtype=np.float32)  # reused each step
        self._action_shape = (num_envs, *act_space.shape)
        self._action_dtype = act_space.dtype
        self._obs_shape = obs_space.shape

        spec_limit = self.envs.spec.max_episode_steps if self.envs.spec is not None else None
        if max_episode_length is None:
            max_episode_length = spec_limit if spec_limit is not None else 1000
        self.max_episode_length = max_episode_length
        self.dt = float(self.envs.get_attr("dt")[0]) if _has_dt(self.envs) else 1.0

        # per-env bookkeeping in numpy: the simulator is on the CPU anyway, and a numpy op on a
        # few envs costs a fraction of a torch op's dispatch
        self._progress = np.zeros(num_envs, dtype=np.int64)
        self._ended = np.zeros(num_envs, dtype=np.bool_)  # ended in gymnasium's eyes, not reset yet
        self._stepped: np.ndarray | None = None  # sub-envs stepped (skip_members); None: all
        self._on_cpu = self.device.type == "cpu"
        self._batch_size = torch.Size([num_envs])
        # sub-env j of member i gets seed_i + j, as in member i's single env
        obs, _ = self.envs.reset(seed=[s + j for s in seeds for j in range(self.member_num_envs)])
        self._set_obs(np.asarray(obs, dtype=np.float32).reshape(num_envs, -1))

    def scale_action(self, action: torch.Tensor) -> np.ndarray:
        """Clip to [-1, 1] and map onto the Box bounds; infinite bounds pass the clipped value.

        Returns the adapter's reused action buffer (valid until the next call).
        """
        policy_action = action.detach().reshape(self.num_envs, self.action_dim).cpu().numpy()
        np.clip(policy_action, -1.0, 1.0, out=self._action)
        self._action *= self._action_half_range
        self._action += self._action_mid
        return self._action

    @property
    def progress(self) -> torch.Tensor:
        """Steps since each env's last reset (a CPU view of the adapter's counters)."""
        return torch.from_numpy(self._progress)

    def reset(self, env_ids: torch.Tensor | None = None) -> TensorDict:
        ids = as_env_ids(env_ids, self.num_envs, self.device)
        if ids.numel():
            mask = np.zeros(self.num_envs, dtype=np.bool_)
            mask[ids.cpu().numpy()] = True
            self._reset_masked(mask)
        return self.get_obs()

    def _reset_masked(self, mask: np.ndarray, seeds: list[int | None] | None = None) -> None:
        obs, _ = self.envs.reset(seed=seeds, options={"reset_mask": mask})
        # only the reset rows are new: in sync mode the vector env never saw the steps since
        obs_np = self._obs_np.copy()
        obs_np[mask] = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)[mask]
        self._set_obs(obs_np)
        self._progress[mask] = 0
        self._ended[mask] = False

    def get_obs(self) -> TensorDict:
        # one TensorDict per observation, shared by step() and the next reset() of no env;
        # callers clone it before writing into it (the agent does)
        return self._obs_td

    def _set_obs(self, obs: np.ndarray) -> None:
        """Publish a fresh [num_envs, obs_dim] float32 array, never written again (tensors alias it)."""
        self._obs_np = obs
        self._obs_td = TensorDict({"obs": self._tensor(obs)}, batch_size=self._batch_size, device=self.device)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor if self._on_cpu else tensor.to(self.device)

    def skip_members(self, mask: Sequence[bool] | torch.Tensor) -> None:
        skipped = skipped_list(mask, self.num_members)
        if self._sub_envs is None or not any(skipped):
            self._stepped = None
            return
        self._stepped = np.repeat(~np.array(skipped, dtype=np.bool_), self.member_num_envs)

    def step(self, action: torch.Tensor) -> StepResult:
        stepped = self._stepped
        ended = self._ended if stepped is None else self._ended & stepped
        if ended.any():
            raise RuntimeError(f"{self.gym_id}: step() on sub-envs {np.flatnonzero(ended).tolist()} that ended "
                               "and were not reset; call reset(done_ids) first (autoreset is disabled)")
        env_action = self.scale_action(action).astype(self._action_dtype, copy=False).reshape(self._action_shape)
        obs, reward, terminated, gym_truncated = self._step_envs(env_action)
        self._set_obs(obs)
        if stepped is None:
            self._progress += 1
            self._ended = terminated | gym_truncated
        else:  # a skipped sub-env neither ages nor ends
            self._progress += stepped
            self._ended = np.where(stepped, terminated | gym_truncated, self._ended)

        truncated = (gym_truncated | (self._progress >= self.max_episode_length)) & ~terminated
        if stepped is not None:
            truncated &= stepped
        terminate = self._tensor(terminated.astype(np.float32))
        extras = {"terminate": terminate, "termination/env": terminate}
        return StepResult(self._obs_td, self._tensor(reward), self._tensor(terminated), self._tensor(truncated), extras)

    def _step_envs(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every sub-env: fresh float32 obs [N, obs_dim], float32 reward, bool terminated, truncated."""
        if self._sub_envs is None:  # async: the worker processes step, through gymnasium's vector env
            obs, reward, terminated, truncated, _ = self.envs.step(action)
            return (np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1), np.asarray(reward, dtype=np.float32),
                    np.asarray(terminated, dtype=np.bool_), np.asarray(truncated, dtype=np.bool_))
        stepped = self._stepped
        if stepped is None:
            obs = np.empty((self.num_envs, *self._obs_shape), dtype=np.float32)
            reward = np.empty(self.num_envs, dtype=np.float32)
            terminated = np.empty(self.num_envs, dtype=np.bool_)
            truncated = np.empty(self.num_envs, dtype=np.bool_)
            rows = None
        else:  # skipped sub-envs keep their obs and report reward 0 and no end (skip_members)
            obs = self._obs_np.copy().reshape(self.num_envs, *self._obs_shape)
            reward = np.zeros(self.num_envs, dtype=np.float32)
            terminated = np.zeros(self.num_envs, dtype=np.bool_)
            truncated = np.zeros(self.num_envs, dtype=np.bool_)
            rows = np.flatnonzero(stepped)
        if self._kernel is not None:
            kernel, time_limit = self._kernel
            kernel.step(action, rows, obs.reshape(self.num_envs, -1), reward, terminated)
            # TimeLimit's truncation: this step is step progress + 1 of the episode
            progress = self._progress if rows is None else self._progress[rows]
            truncated[slice(None) if rows is None else rows] = progress + 1 >= time_limit
        else:
            for i in range(self.num_envs) if rows is None else rows.tolist():
                obs[i], reward[i], terminated[i], truncated[i], _ = self._sub_envs[i].step(action[i])
        return obs.reshape(self.num_envs, -1), reward, terminated, truncated

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def member_state_dict(self, member: int) -> dict:
        rows = self.member_slice(member)
        rngs = self.envs.get_attr("np_random")[rows]
        return {"progress": torch.from_numpy(self._progress[rows].copy()), "max_episode_length": self.max_episode_length,
                "np_random": [rng.bit_generator.state for rng in rngs]}

    def load_member_state_dict(self, member: int, state: dict) -> None:
        """Load a single env's state into ``member``; ``max_episode_length`` stays shared (see ``load_state_dict``)."""
        rows = self.member_slice(member)
        if len(state["np_random"]) != self.member_num_envs:
            raise ValueError(f"state holds {len(state['np_random'])} sub-envs, a member here has {self.member_num_envs}")
        self._progress[rows] = state["progress"].cpu().numpy()
        rngs = list(self.envs.get_attr("np_random"))
        rngs[rows] = [_generator(rng_state) for rng_state in state["np_random"]]
        self.envs.set_attr("np_random", rngs)

    def reset_member(self, member: int, seed: int) -> None:
        """Make ``member`` what a fresh single env with ``seed`` is: sub-env j reset with ``seed + j``."""
        rows = self.member_slice(member)
        mask = np.zeros(self.num_envs, dtype=np.bool_)
        mask[rows] = True
        seeds: list[int | None] = [None] * self.num_envs
        seeds[rows] = [seed + j for j in range(self.member_num_envs)]
        self._reset_masked(mask, seeds)

    def close(self) -> None:
        self.envs.close()


def _make_vec(gym_id: str, num_envs: int, vectorization_mode: str,
              env_kwargs: Mapping[str, Any] | None) -> gym.vector.VectorEnv:
    """``gym.make_vec`` with autoreset off and without the call-order wrappers (module docstring)."""
    module, _, env_id = gym_id.rpartition(":")
    if module:  # gymnasium's "module:Env-v0" form: the module registers the env
        importlib.import_module(module)
    spec = copy.deepcopy(gym.spec(env_id))
    spec.order_enforce = False
    spec.disable_env_checker = True
    # copy=False: the adapter copies every observation into its own float32 array
    return gym.make_vec(spec, num_envs=num_envs, vectorization_mode=vectorization_mode,
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.DISABLED, "copy": False},
                        **dict(env_kwargs or {}))


def _generator(rng_state: dict) -> np.random.Generator:
    bit_generator = getattr(np.random, rng_state["bit_generator"])()
    bit_generator.state = rng_state
    return np.random.Generator(bit_generator)


def _has_dt(envs: gym.vector.VectorEnv) -> bool:
    try:
        envs.get_attr("dt")
    except AttributeError:
        return False
    return True
