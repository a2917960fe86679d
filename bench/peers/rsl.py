"""rsl_rl's PPO (rsl_rl.algorithms.PPO) driven by its OnPolicyRunner over our batched envs.

The workbench env is wrapped in rsl_rl's VecEnv API (``bench.rsl_vec_env``): Isaac Lab style
auto-reset, time-outs reported in ``extras["time_outs"]``.
"""
from __future__ import annotations

import contextlib
import io
import math

from rsl_rl.runners import OnPolicyRunner

from bench.rsl_vec_env import RslVecEnv
from bench.workloads import Workload


def train_cfg(w: Workload, seed: int) -> dict:
    model = {"class_name": "rsl_rl.models:MLPModel", "hidden_dims": list(w.hidden), "activation": w.activation,
             "obs_normalization": w.normalize_obs}
    return {
        "seed": seed, "num_steps_per_env": w.num_steps, "save_interval": 10**9, "check_for_nan": True,
        "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
        "actor": {**model, "distribution_cfg": {"class_name": "rsl_rl.modules.distribution:GaussianDistribution",
                                                "init_std": math.exp(w.init_logstd), "std_type": "log",
                                                "learn_std": w.learnable_std}},
        "critic": dict(model),
        "algorithm": {"class_name": "rsl_rl.algorithms:PPO", "num_learning_epochs": w.epochs,
                      "num_mini_batches": w.minibatches, "clip_param": w.clip, "gamma": w.gamma, "lam": w.lam,
                      "value_loss_coef": 0.5, "entropy_coef": 0.0, "learning_rate": w.lr,
                      "max_grad_norm": w.grad_clip, "use_clipped_value_loss": True, "schedule": "fixed",
                      "normalize_advantage_per_mini_batch": False},
    }


class Trainer:
    name = "rsl_rl"

    def __init__(self, workload: Workload, seed: int = 0):
        self.env = RslVecEnv.from_workload(workload, seed=seed)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the models
            self.runner = OnPolicyRunner(self.env, train_cfg(workload, seed), log_dir=None, device="cpu")
        self.steps_per_iteration = workload.steps_per_iteration
        self.steps = 0

    def iterate(self, n: int) -> None:
        self.runner.learn(num_learning_iterations=n)
        self.steps += n * self.steps_per_iteration

    def close(self) -> None:
        self.env.close()
