"""The benchmark workloads: one set of PPO settings that every implementation is configured to."""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Workload:
    name: str
    env: str                      # "halfcheetah" (Gymnasium HalfCheetah-v5) or "pendulum" (workbench torch pendulum)
    num_envs: int
    num_steps: int                # steps per env per iteration
    epochs: int
    minibatches: int
    hidden: tuple[int, ...]
    activation: str               # "tanh" or "relu"
    lr: float
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    grad_clip: float = 0.5
    learnable_std: bool = True
    init_logstd: float = 0.0
    normalize_obs: bool = True
    peers: tuple[str, ...] = field(default=("sb3", "torchrl", "rsl_rl"))
    description: str = ""

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.steps_per_iteration // self.minibatches

    @property
    def gym_id(self) -> str:
        return {"halfcheetah": "HalfCheetah-v5"}.get(self.env, self.env)


HALFCHEETAH_CLEANRL = Workload(
    name="halfcheetah_cleanrl", env="halfcheetah", num_envs=1, num_steps=2048, epochs=10, minibatches=32,
    hidden=(64, 64), activation="tanh", lr=3e-4,
    description="HalfCheetah-v5, CleanRL settings: 1 env, 2048 steps, 10 epochs x 32 minibatches, 64x64 tanh")

HALFCHEETAH_RELU256 = replace(
    HALFCHEETAH_CLEANRL, name="halfcheetah_relu3x256", hidden=(256, 256, 256), activation="relu",
    description="HalfCheetah-v5, CleanRL settings with 3x256 ReLU networks")

# Not one of issue 6's workloads: the same 2048-step iterations from 8 envs (conf/tuning/mujoco.yaml's
# default), where per-step Python overhead is shared by 8 envs. TorchRL's trainer here runs 1 env only.
HALFCHEETAH_8ENV = replace(
    HALFCHEETAH_CLEANRL, name="halfcheetah_8env", num_envs=8, num_steps=256, peers=("sb3", "rsl_rl"),
    description="HalfCheetah-v5, CleanRL settings but 8 envs x 256 steps (same 2048-step iterations)")

PENDULUM_BATCHED = Workload(
    name="pendulum_1024", env="pendulum", num_envs=1024, num_steps=32, epochs=5, minibatches=4,
    hidden=(64, 64), activation="tanh", lr=1e-3, grad_clip=1.0, learnable_std=False, init_logstd=-0.5,
    peers=("torchrl", "rsl_rl"),
    description="workbench torch Pendulum, 1024 envs, 2x64 tanh, 32 steps x 5 epochs x 4 minibatches")

WORKLOADS = {w.name: w for w in (HALFCHEETAH_CLEANRL, HALFCHEETAH_RELU256, PENDULUM_BATCHED, HALFCHEETAH_8ENV)}


def scaled(workload: Workload, num_steps: int | None = None, num_envs: int | None = None) -> Workload:
    """A smaller copy of a workload (for smoke tests): same settings, fewer steps or envs."""
    return replace(workload, num_steps=num_steps or workload.num_steps, num_envs=num_envs or workload.num_envs)
