"""A workbench batched env behind TorchRL's ``EnvBase`` API (batch_size = [num_envs]).

TorchRL resets the envs whose ``done`` is set through ``_reset`` with a ``"_reset"`` mask; the
workbench env's ``reset(env_ids)`` resets exactly those and returns every env's observation.
"""
from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase


class TorchRLBatchedEnv(EnvBase):
    def __init__(self, env):
        super().__init__(device=env.device, batch_size=torch.Size([env.num_envs]))
        self.env = env
        n = env.num_envs
        obs_dim = env.reset()["obs"].shape[-1]
        self.observation_spec = Composite(observation=Unbounded(shape=(n, obs_dim)), shape=(n,))
        self.action_spec = Unbounded(shape=(n, env.action_dim))
        self.reward_spec = Unbounded(shape=(n, 1))
        flag = Categorical(2, shape=(n, 1), dtype=torch.bool)
        self.done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=(n,))

    def _flags(self, terminated: torch.Tensor, truncated: torch.Tensor) -> dict:
        terminated, truncated = terminated.unsqueeze(-1), truncated.unsqueeze(-1)
        return {"done": terminated | truncated, "terminated": terminated, "truncated": truncated}

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        ids = None
        if tensordict is not None and "_reset" in tensordict.keys():
            ids = tensordict.get("_reset").reshape(-1).nonzero().squeeze(-1)
        obs = self.env.reset(ids)["obs"]
        none = torch.zeros(self.env.num_envs, dtype=torch.bool, device=self.device)
        return TensorDict({"observation": obs, **self._flags(none, none)}, batch_size=self.batch_size)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        result = self.env.step(tensordict.get("action"))
        return TensorDict({"observation": result.obs["obs"], "reward": result.reward.unsqueeze(-1),
                           **self._flags(result.terminated, result.truncated)}, batch_size=self.batch_size)

    def _set_seed(self, seed: int | None) -> None:
        if seed is not None and hasattr(self.env, "generator"):
            self.env.generator.manual_seed(seed)
