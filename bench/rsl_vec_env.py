"""A workbench batched env behind rsl_rl's ``VecEnv`` API.

The workbench protocol resets lazily (``step`` returns the pre-reset observation, the agent calls
``reset(done_ids)``); rsl_rl expects the env to reset itself, return the post-reset observation and
report time limits in ``extras["time_outs"]``. This wrapper does that translation.
"""
from __future__ import annotations

import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from bench.workloads import Workload


def make_workbench_env(workload: Workload, seed: int = 0):
    """The workbench env a workload names, as our agent builds it."""
    if workload.env == "pendulum":
        from workbench.envs.pendulum import Pendulum
        return Pendulum(num_envs=workload.num_envs, seed=seed)
    from workbench.envs.gym_adapter import GymVectorEnv
    return GymVectorEnv(workload.gym_id, num_envs=workload.num_envs, seed=seed)


class RslVecEnv(VecEnv):
    def __init__(self, env):
        self.env = env
        self.num_envs = env.num_envs
        self.num_actions = env.action_dim
        self.max_episode_length = env.max_episode_length
        self.device = env.device
        self.cfg = {}
        self.episode_length_buf = torch.zeros(self.num_envs, dtype=torch.long)
        self._obs = env.reset()["obs"]

    @classmethod
    def from_workload(cls, workload: Workload, seed: int = 0) -> "RslVecEnv":
        return cls(make_workbench_env(workload, seed))

    def get_observations(self) -> TensorDict:
        return TensorDict({"policy": self._obs}, batch_size=[self.num_envs])

    def step(self, actions: torch.Tensor):
        result = self.env.step(actions)
        dones = result.dones
        self.episode_length_buf += 1
        if dones.any():
            ids = dones.nonzero().squeeze(-1)
            self._obs = self.env.reset(ids)["obs"]
            self.episode_length_buf[ids] = 0
        else:
            self._obs = result.obs["obs"]
        extras = {"time_outs": result.truncated}
        return self.get_observations(), result.reward, dones.long(), extras

    def close(self) -> None:
        self.env.close()
