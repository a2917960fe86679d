"""Our PPO (workbench.agents.ppo.PPO), configured through the Hydra config like a user would."""
from __future__ import annotations

from omegaconf import OmegaConf

from bench.compose import compose_config
from bench.workloads import Workload
from workbench.train import build_agent


def overrides_for(w: Workload, seed: int) -> list[str]:
    out = [f"env={w.env}", f"env.num_envs={w.num_envs}", f"agent.num_steps={w.num_steps}",
           f"agent.batch_size={w.minibatch_size}", f"agent.num_mini_epochs={w.epochs}",
           f"agent.gamma={w.gamma}", f"agent.tau={w.lam}", f"agent.e_clip={w.clip}",
           f"agent.gradient_clip_val={w.grad_clip}", "agent.entropy_coef=0.0",
           "agent.actor_clip_frac_threshold=null",
           f"agent.model.actor.learnable_std={str(w.learnable_std).lower()}",
           f"agent.model.actor.actor_logstd={w.init_logstd}",
           f"agent.model.actor_optimizer.lr={w.lr}", f"agent.model.critic_optimizer.lr={w.lr}",
           f"seed={seed}", "torch_threads=null"]
    if w.env == "halfcheetah":
        out.append("agent.advantage_normalization.use_ema=false")  # per-batch, as CleanRL
    return out


def layers_for(w: Workload) -> list[dict]:
    return [{"units": u, "activation": w.activation} for u in w.hidden]


class Trainer:
    name = "ours"

    def __init__(self, workload: Workload, seed: int = 0):
        cfg = compose_config(overrides_for(workload, seed))
        for container in (cfg.agent.model.actor.mu_model, cfg.agent.model.critic):
            model = container.models[0]
            model.layers = OmegaConf.create(layers_for(workload))
            model.normalize_obs = workload.normalize_obs
        self.cfg = cfg
        self.agent = build_agent(cfg, None)
        self.agent.evaluator = None  # the benchmark times training, as the peers' loops do
        self.steps_per_iteration = workload.steps_per_iteration
        self.steps = 0

    def iterate(self, n: int) -> None:
        for _ in range(n):
            self.agent.train_iteration()
        self.steps = self.agent.step_count

    def close(self) -> None:
        self.agent.env.close()
