"""TorchRL PPO: ClipPPOLoss + GAE in a minimal loop on TorchRL's public API.

Laid out like TorchRL's own PPO examples: an env with a VecNorm transform, a ProbabilisticActor with
a state-independent scale, a ValueOperator critic, a Collector, GAE on each batch, and a replay
buffer sampled without replacement for the minibatches.
"""
from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
from torchrl.envs import Compose, DoubleToFloat, GymEnv, TransformedEnv, VecNorm
from torchrl.modules import MLP, IndependentNormal, ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from bench.rsl_vec_env import make_workbench_env
from bench.torchrl_env import TorchRLBatchedEnv
from bench.workloads import Workload

ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


class StateIndependentScale(torch.nn.Module):
    """Splits nothing: returns (loc, exp(logstd)) with one logstd per action dimension."""

    def __init__(self, action_dim: int, init_logstd: float, learnable: bool):
        super().__init__()
        self.logstd = torch.nn.Parameter(torch.full((action_dim,), init_logstd), requires_grad=learnable)

    def forward(self, loc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return loc, self.logstd.exp().expand_as(loc)


def make_env(w: Workload, seed: int):
    if w.env == "pendulum":
        base = TorchRLBatchedEnv(make_workbench_env(w, seed))
        transforms = Compose(VecNorm(in_keys=["observation"], decay=0.99999)) if w.normalize_obs else Compose()
    else:
        if w.num_envs != 1:
            raise ValueError("the TorchRL HalfCheetah trainer runs 1 env, as CleanRL's settings do")
        base = GymEnv(w.gym_id, device="cpu")
        transforms = Compose(DoubleToFloat())
        if w.normalize_obs:
            transforms.append(VecNorm(in_keys=["observation"], decay=0.99999))
    env = TransformedEnv(base, transforms)
    env.set_seed(seed)
    return env


class Trainer:
    name = "torchrl"

    def __init__(self, workload: Workload, seed: int = 0):
        w = self.workload = workload
        torch.manual_seed(seed)
        self.env = make_env(w, seed)
        obs_dim = self.env.observation_spec["observation"].shape[-1]
        act_dim = self.env.action_spec.shape[-1]
        act = ACTIVATIONS[w.activation]
        actor_net = torch.nn.Sequential(
            MLP(in_features=obs_dim, out_features=act_dim, num_cells=list(w.hidden), activation_class=act),
            StateIndependentScale(act_dim, w.init_logstd, w.learnable_std))
        self.actor = ProbabilisticActor(
            TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"], spec=self.env.full_action_spec_unbatched, distribution_class=IndependentNormal,
            return_log_prob=True)
        self.critic = ValueOperator(
            MLP(in_features=obs_dim, out_features=1, num_cells=list(w.hidden), activation_class=act),
            in_keys=["observation"])
        self.gae = GAE(gamma=w.gamma, lmbda=w.lam, value_network=self.critic, average_gae=False)
        self.loss = ClipPPOLoss(self.actor, self.critic, clip_epsilon=w.clip, entropy_bonus=False,
                                critic_coeff=0.5, loss_critic_type="l2", normalize_advantage=True)
        self.optimizer = torch.optim.Adam(self.loss.parameters(), lr=w.lr, eps=1e-5)
        self.collector = Collector(self.env, self.actor, frames_per_batch=w.steps_per_iteration, total_frames=-1,
                                   auto_register_policy_transforms=False)
        self.batches = iter(self.collector)
        self.buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(w.steps_per_iteration),
                                             sampler=SamplerWithoutReplacement(), batch_size=w.minibatch_size)
        self.steps_per_iteration = w.steps_per_iteration
        self.steps = 0

    def iteration(self) -> None:
        w = self.workload
        data = next(self.batches)
        self.steps += data.numel()
        for _ in range(w.epochs):
            with torch.no_grad():
                data = self.gae(data)  # recomputed each epoch, as TorchRL's examples do
            self.buffer.extend(data.reshape(-1))
            for _ in range(w.minibatches):
                batch = self.buffer.sample()
                losses = self.loss(batch)
                total = losses["loss_objective"] + losses["loss_critic"]
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                torch.nn.utils.clip_grad_norm_(self.loss.parameters(), w.grad_clip)
                self.optimizer.step()
        self.collector.update_policy_weights_()

    def iterate(self, n: int) -> None:
        for _ in range(n):
            self.iteration()

    def close(self) -> None:
        self.collector.shutdown()
        if not self.env.is_closed:
            self.env.close()
