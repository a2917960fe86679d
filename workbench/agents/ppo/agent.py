"""The PPO agent of ProtoMotions (ppo-spec section 3), on torch and tensordict.

One call of ``train_iteration`` collects ``num_steps`` steps from every env,
normalises rewards, computes GAE, normalises advantages, runs the minibatch
updates and returns the iteration's metrics as floats.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tensordict import TensorDict

from workbench.agents.base_agent import BaseAgent
from workbench.agents.common import checkpoint as ckpt
from workbench.agents.common.episode_length import max_episode_length
from workbench.agents.common.episodes import account_episodes
from workbench.agents.common.evaluator import Evaluator
from workbench.agents.common.gradients import GradStep, inspect_and_clip
from workbench.agents.common.metrics import MeanAccumulator
from workbench.agents.common.minibatch import PackedRollout
from workbench.agents.common.optim import build_optimizer
from workbench.agents.common.running_mean_std import RewardNormalizer
from workbench.agents.ppo import losses
from workbench.agents.ppo.advantage_norm import AdvantageNormalizer
from workbench.agents.ppo.config import PPOAgentConfig
from workbench.agents.ppo.model import PPOModel, gaussian_neglogp

MODEL_KEYS = ("action", "mean_action", "neglogp", "value")


class PPO(BaseAgent):
    def __init__(self, config: PPOAgentConfig, env, *, device: torch.device | str = "cpu", eval_env=None,
                 output_dir: Path | str | None = None, seed: int = 0):
        self.config = config
        self.env = env
        self.device = torch.device(device)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.num_envs = env.num_envs
        self.num_steps = config.num_steps
        self._check_batch_size()

        self.model = PPOModel(config.model).to(self.device)
        self.reward_norm = RewardNormalizer(self.num_envs, config.gamma, config.normalized_reward_clamp_value,
                                            config.reward_norm_ema_decay, device=self.device)
        self.adv_norm = AdvantageNormalizer(config.advantage_normalization).to(self.device)
        self.evaluator = Evaluator(config.evaluator, eval_env) if eval_env is not None else None
        # Minibatch permutations draw from their own generator so a resume can restore it.
        self.shuffle_rng = torch.Generator().manual_seed(seed)

        self.epoch = 0
        self.step_count = 0
        self.best_score = -math.inf
        self.max_epochs = self._max_epochs()
        self._force_eval = False
        self._setup()

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        obs = self.env.reset()
        self.obs_keys = list(obs.keys())
        self.model.eval()
        with torch.no_grad():  # materialises the lazy layers (PyTorch default init) and obs normalisers
            self.model(obs.clone())
        self.actor_optimizer = build_optimizer(self.config.model.actor_optimizer, self.model.actor.parameters())
        self.critic_optimizer = build_optimizer(self.config.model.critic_optimizer, self.model.critic.parameters())
        self.actor_lr = float(self.config.model.actor_optimizer.lr)
        self.critic_lr = float(self.config.model.critic_optimizer.lr)
        self._named_params: dict[str, list] = {}  # per network, for the gradient checks

        n = self.num_envs
        self.done_ids = torch.arange(n, device=self.device)
        self.episode_return = torch.zeros(n, device=self.device)
        self.episode_length = torch.zeros(n, device=self.device)
        self.last_episode_metrics = {"info/episode_reward": 0.0, "info/episode_length": 0.0}
        self.start_time = time.time()
        self.time_offset = 0.0  # training time of earlier runs this one resumed
        self.last_eval: dict[str, float] = {}

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def collect_rollout(self) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Run every env for num_steps with the stochastic policy; fill a [T, N] buffer."""
        T, N, dev = self.num_steps, self.num_envs, self.device
        self.model.eval()
        buf: dict[str, torch.Tensor] = {}
        extras_steps: dict[str, list[torch.Tensor]] = {}

        for t in range(T):
            obs = self.env.reset(self.done_ids)
            td = self.model(obs.clone(False))
            step = self.env.step(td.get("action"))
            dones = step.dones
            row = {**{k: td.get(k) for k in self.obs_keys + list(MODEL_KEYS)},
                   "rewards": step.reward, "dones": dones, "terminated": step.terminated}
            if not buf:
                buf = {k: torch.empty((T, *v.shape), dtype=v.dtype, device=dev) for k, v in row.items()}
                buf["next_value"] = torch.zeros_like(buf["value"])
            for k, v in row.items():
                buf[k][t] = v
            # V(next obs) of an env that goes on is the next step's value, computed anyway; only
            # truncated envs (whose next obs is replaced by a reset) need the critic here. The last
            # step's next values all come from one critic pass after the loop.
            if t < T - 1 and step.truncated.any():
                truncated_ids = (step.truncated & ~step.terminated).nonzero().squeeze(-1)
                if truncated_ids.numel():
                    final_obs = step.obs[truncated_ids]
                    buf["next_value"][t, truncated_ids] = self.model.critic(final_obs.clone(False)).get("value")
            for key, value in step.extras.items():
                if not key.startswith("raw/"):
                    extras_steps.setdefault(key, []).append(value)
            self.done_ids = dones.nonzero().squeeze(-1)

        self.reward_norm.record_rollout(buf["rewards"], buf["terminated"])
        self._fill_next_values(buf, step.obs)
        for key in MODEL_KEYS:
            if not torch.isfinite(buf[key]).all():
                raise FloatingPointError(f"non-finite {key!r} in the rollout at epoch {self.epoch}")
        self.step_count += T * N

        finished = account_episodes(buf["rewards"], buf["dones"], self.episode_return, self.episode_length)
        count = finished.count.item()
        if count > 0:  # otherwise the previous episode figures repeat, as in the reference
            self.last_episode_metrics = {"info/episode_reward": finished.return_sum.item() / count,
                                         "info/episode_length": finished.length_sum.item() / count}
        logs = dict(self.last_episode_metrics)
        logs["info/episodes_finished"] = count
        for key, values in extras_steps.items():  # per-step mean and std over envs, averaged over the rollout
            v = torch.stack(values).float().reshape(len(values), -1)
            std = v.std(dim=1) if v.shape[1] > 1 else torch.zeros(len(values), device=dev)
            logs[f"env/{key}_mean"], logs[f"env/{key}_std"] = torch.stack((v.mean(1).mean(), std.mean())).tolist()
        return buf, logs

    @torch.no_grad()
    def _fill_next_values(self, buf: dict[str, torch.Tensor], last_obs) -> None:
        """next_value[t] = V(obs after step t): 0 on termination, V(final obs) on truncation (filled
        during collection), the next step's value otherwise, and one critic pass after the last step."""
        running = ~buf["dones"][:-1].unsqueeze(-1)
        buf["next_value"][:-1] = torch.where(running, buf["value"][1:], buf["next_value"][:-1])
        buf["next_value"][-1] = self.model.critic(last_obs.clone(False)).get("value")  # obs are pre-reset
        buf["next_value"].mul_(~buf.pop("terminated").unsqueeze(-1))

    # ------------------------------------------------------------------ targets
    @torch.no_grad()
    def compute_targets(self, buf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reward normalisation, GAE and returns (ppo-spec 3.2-3.3); adds rewards/returns/advantages."""
        c = self.config
        logs: dict[str, torch.Tensor] = {}
        rewards = buf["rewards"]
        values, next_values = buf["value"].squeeze(-1), buf["next_value"].squeeze(-1)
        if c.normalize_rewards:
            norm = self.reward_norm
            buf["unnormalized_rewards"] = rewards
            buf["rewards"] = norm.norm(rewards.unsqueeze(-1)).squeeze(-1)
            # the critic predicts normalised returns; GAE runs in raw reward units
            values = norm.unnorm(values.unsqueeze(-1)).squeeze(-1)
            next_values = norm.unnorm(next_values.unsqueeze(-1)).squeeze(-1)
            logs.update({"rewards/unnormalized_task_rewards": rewards.mean(),
                         "reward_norm/var": norm.var.float().squeeze(),
                         "reward_norm/pre_norm_reward": rewards.mean(),
                         "reward_norm/post_norm_reward": buf["rewards"].mean()})
        logs["rewards/task_rewards"] = buf["rewards"].mean()

        advantages = losses.compute_gae(rewards, values, next_values, buf["dones"], c.gamma, c.tau)
        returns = advantages + values
        if c.normalize_rewards:
            returns = self.reward_norm.norm(returns.unsqueeze(-1)).squeeze(-1)
        if not torch.isfinite(returns).all():
            raise FloatingPointError(f"non-finite returns at epoch {self.epoch}")
        buf["returns"] = returns.unsqueeze(-1)
        buf["advantages"] = advantages * c.task_reward_w
        return logs

    # ------------------------------------------------------------------ optimisation
    def optimize(self, buf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Advantage normalisation, then the minibatch passes (ppo-spec 3.4-3.7)."""
        c = self.config
        T, N = self.num_steps, self.num_envs
        advantages, adv_logs = self.adv_norm(buf["advantages"])
        buf["advantages"] = advantages
        # env-major flattening: row = env * T + t
        data = {k: v.transpose(0, 1).reshape(N * T, *v.shape[2:]) for k, v in buf.items()}
        for key, value in data.items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise FloatingPointError(f"non-finite {key!r} in the training batch at epoch {self.epoch}")

        rollout = PackedRollout(data)
        size = N * T
        num_batches = math.ceil(size * c.num_mini_epochs / c.batch_size)
        batches_per_pass = size // c.batch_size
        acc = MeanAccumulator()
        self.skip_updates = False
        self.model.train()
        perm = torch.randperm(size, generator=self.shuffle_rng).to(self.device)
        for i in range(num_batches):
            j = i % batches_per_pass
            if j == 0 and i > 0:
                perm = torch.randperm(size, generator=self.shuffle_rng).to(self.device)
            idx = perm[j * c.batch_size:(j + 1) * c.batch_size]
            batch = TensorDict(rollout.gather(idx), batch_size=[c.batch_size])
            acc.add(self.optimization_step(batch))
        self.model.eval()
        out = acc.means()
        out.update({k: float(v) for k, v in adv_logs.items()})
        return out

    def actor_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        c = self.config
        actor = self.model.actor
        mu, logstd = actor.distribution(batch)
        ratio = torch.exp(batch.get("neglogp") - gaussian_neglogp(batch.get("action"), mu, logstd))
        ppo = losses.ppo_actor_loss(batch.get("advantages"), ratio, c.e_clip)
        bounds = losses.bounds_loss(mu, c.bounds_loss_coef) if c.bounds_loss_coef > 0 else ppo.new_zeros(())
        extra = self.l2c2_loss(batch, mu) if c.l2c2.enabled else {}
        model_loss = self.model.compute_model_loss(batch)
        total = ppo + bounds + extra.get("actor/l2c2_weighted", 0.0) + model_loss
        entropy = losses.gaussian_entropy(logstd).mean()
        if actor.config.learnable_std:
            total = total - c.entropy_coef * entropy
        with torch.no_grad():  # diagnostics: no autograd graph for them
            r = ratio.detach()
            logs = {"actor/ppo_loss": ppo, "actor/bounds_loss": bounds,
                    "actor/extra_loss": extra.get("actor/l2c2_weighted", ppo.new_zeros(())),
                    "actor/model_loss": model_loss, "actor/entropy": entropy,
                    "actor/clip_frac": losses.clip_fraction(r, c.e_clip), "actor/approx_kl": losses.approx_kl(r),
                    "actor/ratio_mean": r.mean(), "actor/ratio_std": r.std(), "actor/ratio_max": r.max(),
                    **extra}
            if actor.config.learnable_std:
                logs["actor/entropy_loss"] = -c.entropy_coef * entropy
                logs["actor/std_mean"] = torch.exp(actor.logstd).mean()
            else:
                logs["actor/entropy_loss"] = ppo.new_zeros(())
        logs["losses/actor_loss"] = total
        return total, {k: v.detach() if torch.is_tensor(v) else v for k, v in logs.items()}, mu

    def l2c2_loss(self, batch: TensorDict, mu_noisy: torch.Tensor) -> dict[str, torch.Tensor]:
        """Smoothness penalty between the actor's output on noisy and clean observations."""
        pairs = self.config.l2c2.obs_pairs
        clean = batch.clone(False)
        in_dist = mu_noisy.new_zeros(())
        for noisy_key, clean_key in pairs.items():
            noisy_x, clean_x = batch.get(noisy_key), batch.get(clean_key)
            in_dist = in_dist + ((noisy_x - clean_x).square().sum() / noisy_x.numel()).detach()
            clean.set(noisy_key, clean_x)
        mu_clean, _ = self.model.actor.distribution(clean)
        out_dist = (mu_noisy - mu_clean).square().mean()
        loss = out_dist / (in_dist + 1e-8)
        lam = self.config.l2c2.lambda_l2c2
        return {"actor/l2c2_loss": loss, "actor/l2c2_weighted": lam * loss,
                "actor/l2c2_input_dist": in_dist, "actor/l2c2_output_dist": out_dist.detach()}

    def adapt_learning_rates(self, batch: TensorDict, mu: torch.Tensor) -> dict[str, torch.Tensor]:
        """KL-driven LR schedule for both networks (ppo-spec 3.9)."""
        c = self.config.adaptive_lr
        kl = losses.gaussian_kl_same_std(mu.detach(), batch.get("mean_action"), self.model.actor.logstd.detach())
        kl_value = kl.item()
        for attr, opt in (("actor_lr", self.actor_optimizer), ("critic_lr", self.critic_optimizer)):
            old = getattr(self, attr)
            new = old
            if kl_value > 2.0 * c.desired_kl:
                new = max(old / 1.5, c.min_lr)
            elif 0.0 < kl_value < c.desired_kl / 2.0:
                new = min(old * 1.5, c.max_lr)
            for group in opt.param_groups:
                group["lr"] *= new / old
            setattr(self, attr, new)
        return {"actor/kl": kl, "info/actor_lr": torch.tensor(self.actor_lr), "info/critic_lr": torch.tensor(self.critic_lr)}

    def optimization_step(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        c = self.config
        loss, logs, mu = self.actor_loss(batch)
        if c.adaptive_lr.enabled:
            logs.update(self.adapt_learning_rates(batch, mu))
        if not self.skip_updates and c.actor_clip_frac_threshold is not None:
            if logs["actor/clip_frac"].item() > c.actor_clip_frac_threshold:
                self.skip_updates = True  # for the rest of this iteration, this batch included
        if self.skip_updates:
            logs["actor/update_skipped"] = 1.0
            return logs
        logs["actor/update_skipped"] = 0.0
        critic_total, critic_logs = self.critic_loss(batch)
        # Actor and critic share no parameters, so one backward pass of the sum gives each network
        # exactly its own loss's gradients; each is then checked, clipped and stepped on its own.
        self.actor_optimizer.zero_grad(set_to_none=True)
        self.critic_optimizer.zero_grad(set_to_none=True)
        (loss + critic_total).backward()
        logs.update(self.step_network("actor", self.model.actor, self.actor_optimizer))
        logs.update(self.step_network("critic", self.model.critic, self.critic_optimizer))
        logs.update(critic_logs)
        return logs

    def critic_loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        old_values, returns = batch.get("value"), batch.get("returns")
        values = self.model.critic(batch).get("value")
        value_loss, value_clip_frac = losses.critic_loss(values, old_values, returns, c.e_clip, c.clip_critic_loss)
        model_loss = self.model.compute_model_loss(batch)
        critic_total = value_loss + model_loss
        v, r = values.detach(), returns
        error = v - r
        logs = {"losses/critic_loss": critic_total.detach(), "critic/model_loss": model_loss,
                "critic/value_clip_frac": value_clip_frac,
                "critic/explained_variance": losses.explained_variance(v, r),
                "critic/value_mean": v.mean(), "critic/value_std": v.std(),
                "critic/return_mean": r.mean(), "critic/return_std": r.std(),
                "critic/error_mean": error.mean(), "critic/error_std": error.std()}
        return critic_total, logs

    def step_network(self, name: str, module, optimizer) -> dict[str, torch.Tensor]:
        """Check, clip and step one network's gradients (ppo-spec 3.8, workbench's skip on bad grads)."""
        c = self.config
        if name not in self._named_params:  # materialised by now; loading a state keeps the objects
            self._named_params[name] = list(module.named_parameters())
        step: GradStep = inspect_and_clip(module, c.gradient_clip_val, c.check_grad_mag, c.fail_on_bad_grads, name,
                                          self._named_params[name])
        if not step.bad:
            optimizer.step()
        logs = {f"{name}/grad_norm_before_clip": step.norm_before_clip,
                f"{name}/grad_norm_after_clip": step.norm_after_clip,
                f"{name}/bad_grads_count": float(step.bad)}
        logs.update({f"grad_layers/{name}/{layer}": norm for layer, norm in step.layer_norms.items()})
        return logs

    # ------------------------------------------------------------------ the loop
    def train_iteration(self) -> dict[str, float]:
        iteration_start = time.time()
        buf, logs = self.collect_rollout()
        target_logs = self.compute_targets(buf)
        logs.update(self.optimize(buf))
        logs.update({k: float(v) for k, v in target_logs.items()})
        logs["epoch"] = float(self.epoch)
        self.epoch += 1

        self.save_periodic_checkpoints()
        if self.evaluator is not None and (self._force_eval or self.evaluator.due(self.epoch)):
            logs.update(self.evaluate())
        self._force_eval = False

        manager = self.config.max_episode_length_manager
        if manager is not None:
            self.env.max_episode_length = max_episode_length(manager, self.epoch)
        self.env.on_epoch_end(self.epoch)

        seconds = time.time() - iteration_start
        total = self.elapsed()
        frames = self.num_steps * self.num_envs
        logs.update({"info/frames": float(self.step_count), "info/gframes": self.step_count / 1e9,
                     "info/sps": frames / seconds, "times/fps_last_epoch": frames / seconds,
                     "times/fps_total": self.step_count / max(total, 1e-9), "times/last_epoch_seconds": seconds,
                     "times/training_minutes": total / 60.0, "times/training_hours": total / 3600.0})
        return logs

    def fit(self, on_iteration: Callable[[dict[str, float]], None] | None = None) -> dict[str, float]:
        """Train until max_epochs (or training_early_termination); returns the final evaluation."""
        evaluated_last = False
        while not self.should_stop():
            logs = self.train_iteration()
            evaluated_last = "eval/episode_reward" in logs
            if self.should_stop() and self.evaluator is not None and not evaluated_last:
                logs.update(self.evaluate())  # a final evaluation, so every run ends with a score
                evaluated_last = True
            if on_iteration is not None:
                try:
                    on_iteration(logs)
                except BaseException:
                    self.save_checkpoint("last.ckpt")
                    raise
        self.save_checkpoint("last.ckpt")
        return self.last_eval if evaluated_last else {}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        metrics = self.evaluator.evaluate(self.model.actor)
        self.last_eval = metrics
        score = metrics.get("eval/success_rate", metrics["eval/episode_reward"])
        if score >= self.best_score:  # ties count, as in the reference
            self.best_score = score
            self.save_checkpoint("last.ckpt")
            self.save_checkpoint("score_based.ckpt")
        metrics["eval/best_score"] = self.best_score
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "epoch": self.epoch, "step_count": self.step_count, "best_evaluated_score": self.best_score,
            "training_seconds": self.elapsed(),
            "running_reward_norm": self.reward_norm.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "adv_mean_ema": self.adv_norm.mean_ema.clone(), "adv_std_ema": self.adv_norm.std_ema.clone(),
            "adaptive_lr": {"actor_lr": self.actor_lr, "critic_lr": self.critic_lr},
            "evaluator": {"eval_count": self.evaluator.eval_count if self.evaluator else 0},
            # What an exact resume needs beyond the reference's contents:
            "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle_rng.get_state()},
            "env": self.env.state_dict(), "max_episode_length": int(self.env.max_episode_length),
            "done_ids": self.done_ids.cpu(),
            "episode": {"return": self.episode_return.cpu(), "length": self.episode_length.cpu(),
                        "last": dict(self.last_episode_metrics)},
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_checkpoint(self, name: str) -> Path | None:
        if self.output_dir is None:
            return None
        path = self.output_dir / name
        ckpt.save_atomic(self.state_dict(), path)
        if name == "last.ckpt" and self.config.save_inference_checkpoint:
            ckpt.save_atomic({"model": {k: v.cpu() for k, v in self.model.state_dict().items()},
                              "epoch": self.epoch, "step_count": self.step_count},
                             self.output_dir / "inference_last.ckpt")
        return path

    def load_checkpoint(self, path: Path | str, load_training_state: bool = True) -> None:
        state = ckpt.load_checked(path)
        ckpt.check_model_state(state["model"], self.model.state_dict(), path)
        configured_logstd = self.model.actor.logstd.detach().clone()
        self.model.load_state_dict(state["model"])
        if not self.model.actor.config.learnable_std:
            # a fixed std comes from the config, not the checkpoint (as in the reference)
            self.model.actor.logstd.data.copy_(configured_logstd)
        self._force_eval = True
        if not load_training_state:
            return
        try:
            self.epoch = state["epoch"]
            self.step_count = state["step_count"]
            self.best_score = state["best_evaluated_score"]
            self.time_offset = state["training_seconds"]
            self.start_time = time.time()
            self.reward_norm.load_state_dict(state["running_reward_norm"])
            self.actor_optimizer.load_state_dict(state["actor_optimizer"])
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            self.adv_norm.mean_ema.copy_(state["adv_mean_ema"])
            self.adv_norm.std_ema.copy_(state["adv_std_ema"])
            self.actor_lr = state["adaptive_lr"]["actor_lr"]
            self.critic_lr = state["adaptive_lr"]["critic_lr"]
            if self.evaluator is not None:
                self.evaluator.eval_count = state["evaluator"]["eval_count"]
            torch.set_rng_state(state["rng"]["torch"])
            self.shuffle_rng.set_state(state["rng"]["shuffle"])
            if "cuda" in state["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
            self.env.load_state_dict(state["env"])
            self.env.max_episode_length = state["max_episode_length"]
            self.done_ids = state["done_ids"].to(self.device)
            self.episode_return.copy_(state["episode"]["return"])
            self.episode_length.copy_(state["episode"]["length"])
            self.last_episode_metrics = dict(state["episode"]["last"])
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            raise ckpt.CheckpointError(f"checkpoint {path} lacks or mismatches training state ({err!r}); "
                                       "load it as a warm start (load_training_state=false) instead") from err
