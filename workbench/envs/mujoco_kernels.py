"""Batched steps for gymnasium's forward-locomotion MuJoCo envs, bit for bit the envs' own.

``GymVectorEnv`` (sync mode) steps HalfCheetah-v5, Hopper-v5 and Walker2d-v5 sub-envs through a
kernel from here instead of calling each sub-env's ``step``. Per sub-env the kernel makes the
same MuJoCo calls gymnasium makes (``ctrl``, ``mj_step`` x frame_skip, ``mj_rnePostConstraint``),
then it works out the observation, reward and termination of all the sub-envs at once in a few
numpy ops. gymnasium spends about 20 us of Python per sub-env step on those (a fifth of a
HalfCheetah step on one core), and a population steps one sub-env per member.

The formulas are gymnasium's v5 ones with the same dtypes (the control cost is float32, as the
float32 action makes it there), and every constant is read from the env itself, so env kwargs
such as ``ctrl_cost_weight`` or ``healthy_z_range`` hold. ``info`` is not computed: the adapter
drops it. ``tests/test_envs_gym.py`` holds each kernel to its env's own step over whole episodes.

Any other env, a subclass, an extra wrapper or a rendering env has no kernel and is stepped by
gymnasium as before (``kernel_for`` returns None).
"""
from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit


class ForwardKernel:
    """HalfCheetah-v5: reward = w_forward * x velocity - w_ctrl * sum(a^2); never terminates."""

    # the kernel's constants and the env attributes they are read from; every sub-env must agree
    CONSTANTS = {"_frame_skip": "frame_skip", "_dt": "dt", "_forward_weight": "_forward_reward_weight",
                 "_ctrl_weight": "_ctrl_cost_weight", "_skip_x": "_exclude_current_positions_from_observation",
                 "_nq": "model.nq", "_nv": "model.nv"}

    def __init__(self, envs: Sequence[gym.Env]):
        """Raises AttributeError for envs without these constants, ValueError for envs that differ."""
        import mujoco  # here, not at the top: the adapter imports this module for every gymnasium env

        values = [{ours: operator.attrgetter(theirs)(env) for ours, theirs in self.CONSTANTS.items()}
                  for env in envs]
        differing = sorted({k for v in values[1:] for k in v if v[k] != values[0][k]})
        if differing:
            raise ValueError(f"sub-envs differ in {', '.join(self.CONSTANTS[k] for k in differing)}")
        self.__dict__.update(values[0])
        self._mj_step, self._mj_rne_post_constraint = mujoco.mj_step, mujoco.mj_rnePostConstraint
        self._models = [env.model for env in envs]
        self._datas = [env.data for env in envs]
        n = len(envs)
        self._x_before = np.empty(n)
        self._qpos = np.empty((n, self._nq))
        self._qvel = np.empty((n, self._nv))

    def step(self, action: np.ndarray, rows: Sequence[int] | None, obs: np.ndarray, reward: np.ndarray,
             terminated: np.ndarray) -> None:
        """Step sub-envs ``rows`` (None: all) with their rows of ``action``; write their rows of
        ``obs`` (float32 [N, obs_dim]), ``reward`` (float32) and ``terminated`` (bool)."""
        indices = range(len(self._datas)) if rows is None else rows
        n = len(indices)
        x_before, qpos, qvel = self._x_before[:n], self._qpos[:n], self._qvel[:n]
        frame_skip = self._frame_skip
        mj_step, mj_rne_post_constraint = self._mj_step, self._mj_rne_post_constraint
        for k, i in enumerate(indices):
            model, data = self._models[i], self._datas[i]
            x_before[k] = data.qpos[0]
            data.ctrl[:] = action[i]
            mj_step(model, data, nstep=frame_skip)
            mj_rne_post_constraint(model, data)
            qpos[k] = data.qpos
            qvel[k] = data.qvel
        acted = action if rows is None else action[rows]
        x_velocity = (qpos[:, 0] - x_before) / self._dt
        ctrl_cost = self._ctrl_weight * np.add.reduce(np.square(acted), axis=1)
        healthy = self.healthy(qpos, qvel)
        where = slice(None) if rows is None else rows
        obs[where] = np.concatenate((qpos[:, int(self._skip_x):], self.observed_qvel(qvel)), axis=1)
        reward[where] = self.rewards(self._forward_weight * x_velocity, healthy) - ctrl_cost
        terminated[where] = self.terminations(healthy)

    def observed_qvel(self, qvel: np.ndarray) -> np.ndarray:
        return qvel

    def healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray | None:
        return None

    def rewards(self, forward: np.ndarray, healthy: np.ndarray | None) -> np.ndarray:
        return forward

    def terminations(self, healthy: np.ndarray | None) -> np.ndarray | bool:
        return False


class HealthyKernel(ForwardKernel):
    """Walker2d-v5: + healthy_reward while healthy (z and torso angle in range), which it
    terminates on leaving (``terminate_when_unhealthy``); the observed qvel is clipped to +-10."""

    CONSTANTS = {**ForwardKernel.CONSTANTS, "_healthy_reward": "_healthy_reward",
                 "_terminate_when_unhealthy": "_terminate_when_unhealthy", "_z_range": "_healthy_z_range",
                 "_angle_range": "_healthy_angle_range"}

    def observed_qvel(self, qvel: np.ndarray) -> np.ndarray:
        return np.clip(qvel, -10, 10)

    def healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        (min_z, max_z), (min_angle, max_angle) = self._z_range, self._angle_range
        z, angle = qpos[:, 1], qpos[:, 2]
        return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)

    def rewards(self, forward: np.ndarray, healthy: np.ndarray) -> np.ndarray:
        # bool * float, as gymnasium's is_healthy * healthy_reward (-0.0 for a negative reward)
        return forward + healthy.astype(np.float64) * self._healthy_reward

    def terminations(self, healthy: np.ndarray) -> np.ndarray:
        return ~healthy & bool(self._terminate_when_unhealthy)


class HopperKernel(HealthyKernel):
    """Hopper-v5: Walker2d's rules, and every state entry from qpos[2] on inside ``healthy_state_range``."""

    CONSTANTS = {**HealthyKernel.CONSTANTS, "_state_range": "_healthy_state_range"}

    def healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        min_state, max_state = self._state_range
        state = np.concatenate((qpos, qvel), axis=1)[:, 2:]
        in_range = np.logical_and(min_state < state, state < max_state).all(axis=1)
        return in_range & super().healthy(qpos, qvel)


@functools.cache
def kernels() -> dict[type, type[ForwardKernel]]:
    """The env classes that have a kernel (imported on first use: a run without MuJoCo envs never
    imports MuJoCo; a gymnasium without MuJoCo has none)."""
    try:
        from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
        from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
        from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
    except ImportError:
        return {}
    return {HalfCheetahEnv: ForwardKernel, Walker2dEnv: HealthyKernel, HopperEnv: HopperKernel}


def kernel_for(sub_envs: Sequence[gym.Env]) -> tuple[ForwardKernel, float] | None:
    """The kernel for these sub-envs and their TimeLimit (inf: none), or None if gymnasium must step them.

    Only an env of exactly a class in ``kernels()``, bare or in a TimeLimit alone, not rendering.
    """
    if not sub_envs:
        return None
    unwrapped, limits = [], set()
    for env in sub_envs:
        limit = float("inf")
        if type(env) is TimeLimit:
            limit = float(env._max_episode_steps)
            env = env.env
        if env.render_mode is not None:
            return None
        unwrapped.append(env)
        limits.add(limit)
    kinds = {type(env) for env in unwrapped}
    if len(kinds) != 1 or len(limits) != 1:
        return None
    kind = kinds.pop()
    if not kind.__module__.startswith("gymnasium.envs.mujoco.") or kind not in kernels():
        return None
    # AttributeError: a gymnasium whose envs keep their constants elsewhere; ValueError: sub-envs
    # built with different kwargs. Either way gymnasium steps each sub-env as its own env.
    try:
        return kernels()[kind](unwrapped), limits.pop()
    except (AttributeError, ValueError):
        return None
