"""The PPO agent of ProtoMotions, on torch and tensordict, for a population of P members.

One call of ``train_iteration`` collects ``num_steps`` steps from every env, normalises rewards,
computes GAE, normalises advantages, runs the minibatch updates and returns each member's
metrics as floats. The data flow is mapped in docs/agent.md.

A population is P agents of one shape trained as one batched computation: every parameter,
normaliser, optimizer state and RNG stream has a leading member dimension, the env holds
P x num_envs sub-envs (member-major), and every rule that skips an update (the clip-fraction
skip, bad gradients) is a per-member mask. A single agent is the population of one. Member p
follows the single run with member p's seed and hyperparameters; members may be removed and
new ones inserted in their slots while the others train on.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tensordict import TensorDict

from workbench.agents.base_agent import BaseAgent, check_batch_size, max_epochs, periodic_checkpoints
from workbench.agents.common import checkpoint as ckpt
from workbench.agents.common.episode_length import max_episode_length
from workbench.agents.common.episodes import account_episodes
from workbench.agents.common.evaluator import Evaluator
from workbench.agents.common.flat_params import FlatParameters, quiet_layout_warning
from workbench.agents.common.gradients import inspect_and_clip
from workbench.agents.common.member_adam import MemberAdam, adam_kwargs
from workbench.agents.common.metrics import MeanAccumulator
from workbench.agents.common.minibatch import PackedRollout
from workbench.agents.common.modules import NormalizedConcat
from workbench.agents.common.running_mean_std import RewardNormalizer
from workbench.agents.common.stacked import initialising, member_layers
from workbench.agents.ppo import losses
from workbench.agents.ppo.advantage_norm import AdvantageNormalizer
from workbench.agents.ppo.config import PPOAgentConfig
from workbench.agents.ppo.model import PPOModel
from workbench.agents.ppo.objective import actor_objective, critic_objective
from workbench.agents.ppo.population import MemberHyperparams, check_population
from workbench.metric_names import ACTOR, EVAL, INFO, REWARDS, TIMES, bad_grads_count, grad_layer
from workbench.metric_names import grad_norm_after_clip, grad_norm_before_clip

MODEL_KEYS = ("action", "mean_action", "neglogp", "value")
NETWORKS = ("actor", "critic")


class PPO(BaseAgent):
    """PPO for ``len(seeds)`` members. ``config``: one PPOAgentConfig for all members, or one per
    member (they may differ only in ``population.PER_MEMBER``). ``output_dirs``: one per member
    (None: that member writes no checkpoints); ``output_dir`` is the single agent's."""

    def __init__(self, config: PPOAgentConfig | Sequence[PPOAgentConfig], env, *,
                 device: torch.device | str = "cpu", eval_env=None, output_dir: Path | str | None = None,
                 seed: int | Sequence[int] = 0, output_dirs: Sequence[Path | str | None] | None = None):
        seeds = [int(seed)] if isinstance(seed, int) else [int(s) for s in seed]
        configs = list(config) if isinstance(config, Sequence) else [config] * len(seeds)
        if len(configs) != len(seeds):
            raise ValueError(f"{len(configs)} member configs for {len(seeds)} seeds")
        check_population(configs)
        self.num_members = P = len(seeds)
        env_members = getattr(env, "num_members", 1)
        if env_members != P:
            raise ValueError(f"the env holds {env_members} member(s) of envs, the population has {P} members")
        self.config = configs[0]  # the fields all members share
        self.env = env
        self.device = torch.device(device)
        self.num_envs = env.num_envs // P  # per member
        self.num_steps = self.config.num_steps
        check_batch_size(self.config, self.num_envs, self.num_steps)
        if output_dirs is None:
            output_dirs = [output_dir] + [None] * (P - 1) if P == 1 else [None] * P
        self.output_dirs = [Path(d) if d is not None else None for d in output_dirs]
        self.seeds = seeds

        self.hp = MemberHyperparams(configs, self.device)
        self.model = PPOModel(self.config.model, P, self.hp.actor_logstd).to(self.device)
        self.reward_norm = RewardNormalizer(self.num_envs, self.hp.gamma, self.hp.reward_clamp,
                                            self.config.reward_norm_ema_decay, device=self.device, num_members=P)
        self.adv_norm = AdvantageNormalizer(self.hp).to(self.device)
        self.evaluator = Evaluator(self.config.evaluator, eval_env) if eval_env is not None else None
        self._make_generators()

        self.active = torch.ones(P, dtype=torch.bool, device=self.device)
        self.epochs = [0] * P
        self.step_counts = [0] * P
        self.best_scores = [-math.inf] * P
        self.max_epochs_per_member = [max_epochs(c, self.num_envs, self.num_steps) for c in configs]
        self._force_eval = [False] * P
        self._setup()

    # ------------------------------------------------------------------ setup
    def _make_generators(self) -> None:
        """Per member: one stream for the initial weights and then the action noise (on the CPU the
        same stream, as a single run's global generator is), one for the minibatch permutations."""
        cpu = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.init_generators = cpu
        self.noise_generators = cpu if self.device.type == "cpu" else [
            torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]
        self.shuffle_generators = [torch.Generator().manual_seed(s) for s in self.seeds]

    def _setup(self) -> None:
        obs = self.env.reset()
        self.obs_keys = list(obs.keys())
        self.model.eval()
        # materialise the lazy layers: the actor's, its first noise draw, then the critic's, all from
        # the member's stream, in the order a single run's first forward draws them
        self.model.actor.generators = self.noise_generators
        with torch.no_grad(), initialising(self.init_generators):
            self.model(obs.clone())
        self.actor_layers, self.critic_layers = member_layers(self.model.actor), member_layers(self.model.critic)
        self.normalizers = {name: [m for m in module.modules() if isinstance(m, NormalizedConcat)]
                            for name, module in zip(NETWORKS, (self.model.actor, self.model.critic))}
        self.flat: dict[str, FlatParameters] = {}
        self.optimizers: dict[str, MemberAdam] = {}
        for name, module, opt_config, lr in (
                ("actor", self.model.actor, self.config.model.actor_optimizer, self.hp.actor_lr),
                ("critic", self.model.critic, self.config.model.critic_optimizer, self.hp.critic_lr)):
            all_params = list(module.named_parameters())
            trainable = [(n, p) for n, p in all_params if p.requires_grad]
            index = [i for i, (_, p) in enumerate(all_params) if p.requires_grad]
            self.flat[name] = FlatParameters(trainable, self.num_members)
            self.optimizers[name] = MemberAdam(self.flat[name], lr, param_index=index, **adam_kwargs(opt_config))
        self._num_module_params = {name: len(list(m.parameters()))
                                   for name, m in zip(NETWORKS, (self.model.actor, self.model.critic))}

        P, N = self.num_members, self.num_envs
        self.done = torch.ones(P, N, dtype=torch.bool, device=self.device)  # reset at the first step
        self.episode_return = torch.zeros(P, N, device=self.device)
        self.episode_length = torch.zeros(P, N, device=self.device)
        self.last_episode_metrics = [{INFO.episode_reward: 0.0, INFO.episode_length: 0.0} for _ in range(P)]
        self.start_times = [time.time()] * P
        self.time_offsets = [0.0] * P  # training time of earlier runs a member resumed
        self.last_eval: list[dict[str, float]] = [{} for _ in range(P)]

    def _members(self, x: torch.Tensor) -> torch.Tensor:
        """A member-major [P * N, ...] env-batch tensor as [P, N, ...] (a view)."""
        return x.view(self.num_members, self.num_envs, *x.shape[1:])

    # ------------------------------------------------------------------ single-agent conveniences
    @property
    def epoch(self) -> int:
        return self.epochs[0] if self.num_members == 1 else min(self.epochs)

    @property
    def step_count(self) -> int:
        return self.step_counts[0] if self.num_members == 1 else min(self.step_counts)

    @property
    def max_epochs(self) -> int:
        return max(self.max_epochs_per_member)

    @property
    def actor_optimizer(self) -> MemberAdam:
        return self.optimizers["actor"]

    @property
    def critic_optimizer(self) -> MemberAdam:
        return self.optimizers["critic"]

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def collect_rollout(self) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
        """Run every env for num_steps with the stochastic policy; fill a [P, T, N] buffer."""
        P, T, N = self.num_members, self.num_steps, self.num_envs
        self.model.eval()
        if P > 1 and hasattr(self.env, "skip_members"):  # an empty slot's envs need not run
            self.env.skip_members(~self.active)
        steps: dict[str, list[torch.Tensor]] = {}  # per key, one [P, N, ...] tensor a step
        final_values: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (t, truncated, V(final obs))
        extras_steps: dict[str, list[torch.Tensor]] = {}

        for t in range(T):
            obs = self.env.reset(self.done.view(-1).nonzero().squeeze(-1))
            td = self.model(obs.clone(False))  # the env's member-major [P * N] batch
            # The env's tensors are copied before it runs again: an env may write its buffers in
            # place (an IsaacGym-style obs_buf). The model's outputs and dones are fresh each step.
            # One stack per key after the loop costs less than a write into [P, T, ...] every step.
            row = {k: self._members(td.get(k)).clone() for k in self.obs_keys}
            step = self.env.step(td.get("action"))
            dones = step.dones.view(P, N)
            row.update({**{k: self._members(td.get(k)) for k in MODEL_KEYS},
                        "rewards": step.reward.view(P, N).clone(), "dones": dones,
                        "terminated": step.terminated.view(P, N).clone()})
            for k, v in row.items():
                steps.setdefault(k, []).append(v)
            # V(next obs) of an env that goes on is the next step's value, computed anyway; only
            # truncated envs (whose next obs is replaced by a reset) need the critic here. The last
            # step's next values all come from one critic pass after the loop.
            if t < T - 1 and step.truncated.any():
                truncated = (step.truncated & ~step.terminated).view(P, N)
                values = self._members(self.model.critic(step.obs.clone(False)).get("value"))
                final_values.append((t, truncated, values))
            for key, value in step.extras.items():
                if not key.startswith("raw/"):
                    extras_steps.setdefault(key, []).append(value.clone())
            self.done = dones

        buf = {k: torch.stack(v, dim=1) for k, v in steps.items()}  # [P, T, N, ...]
        buf["next_value"] = torch.zeros_like(buf["value"])
        for t, truncated, values in final_values:
            buf["next_value"][:, t] = torch.where(truncated.unsqueeze(-1), values, buf["next_value"][:, t])
        self.reward_norm.record_rollout(buf["rewards"], buf["terminated"], self.active)
        self._fill_next_values(buf, step.obs)
        for key in MODEL_KEYS:
            finite = torch.isfinite(buf[key]).reshape(P, -1).all(1)
            if not bool((finite | ~self.active).all()):
                member = int((~finite & self.active).nonzero()[0])
                raise FloatingPointError(f"non-finite {key!r} in the rollout of member {member} "
                                         f"at epoch {self.epochs[member]}")
        for member in self._active_members():
            self.step_counts[member] += T * N
        return buf, self._rollout_logs(buf, extras_steps)

    def _rollout_logs(self, buf: dict[str, torch.Tensor], extras_steps: dict[str, list[torch.Tensor]]
                      ) -> list[dict[str, float]]:
        P = self.num_members
        finished = account_episodes(buf["rewards"].movedim(1, 0), buf["dones"].movedim(1, 0),
                                    self.episode_return, self.episode_length)
        counts = finished.count.sum(-1).tolist()
        returns, lengths = finished.return_sum.sum(-1).tolist(), finished.length_sum.sum(-1).tolist()
        extras = {}  # as in the reference: a scalar as it is, else its per-step mean and std; rollout means
        for key, values in extras_steps.items():
            v = torch.stack([value.float().reshape(-1) for value in values])  # [T, values]
            if v.shape[1] == 1:  # one value for every member
                v = v.expand(-1, P)
            if v.shape[1] % P:
                raise ValueError(f"env extra {key!r} has {v.shape[1]} values a step; expected one, one per "
                                 f"member ({P}) or a multiple of the member count (per env: {P * self.num_envs})")
            v = v.reshape(len(values), P, -1)
            if v.shape[2] == 1:  # one value per member: a scalar of each member's env
                extras[key] = (v[:, :, 0].mean(0).tolist(), None)
            else:
                extras[key] = (v.mean(2).mean(0).tolist(), v.std(dim=2).mean(0).tolist())
        out = []
        for p in range(P):
            if counts[p] > 0:  # otherwise the previous episode figures repeat, as in the reference
                self.last_episode_metrics[p] = {INFO.episode_reward: returns[p] / counts[p],
                                                INFO.episode_length: lengths[p] / counts[p]}
            logs = dict(self.last_episode_metrics[p])
            logs[INFO.episodes_finished] = counts[p]
            for key, (means, stds) in extras.items():
                if stds is None:
                    logs[f"env/{key}"] = means[p]
                else:
                    logs[f"env/{key}_mean"], logs[f"env/{key}_std"] = means[p], stds[p]
            out.append(logs)
        return out

    @torch.no_grad()
    def _fill_next_values(self, buf: dict[str, torch.Tensor], last_obs) -> None:
        """next_value[t] = V(obs after step t): 0 on termination, V(final obs) on truncation (filled
        during collection), the next step's value otherwise, and one critic pass after the last step."""
        running = ~buf["dones"][:, :-1].unsqueeze(-1)
        buf["next_value"][:, :-1] = torch.where(running, buf["value"][:, 1:], buf["next_value"][:, :-1])
        buf["next_value"][:, -1] = self._members(self.model.critic(last_obs.clone(False)).get("value"))
        buf["next_value"].mul_(~buf.pop("terminated").unsqueeze(-1))

    # ------------------------------------------------------------------ targets
    @torch.no_grad()
    def compute_targets(self, buf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reward normalisation, GAE and returns; adds rewards/returns/advantages. Logs are [P]."""
        c = self.config
        P = self.num_members
        logs: dict[str, torch.Tensor] = {}
        rewards = buf["rewards"]  # [P, T, N]
        values, next_values = buf["value"].squeeze(-1), buf["next_value"].squeeze(-1)
        norm = self.reward_norm

        def through(fn, x):  # the normaliser reads [P, samples, 1]
            return fn(x.reshape(P, -1, 1)).reshape(x.shape)

        if c.normalize_rewards:
            buf["unnormalized_rewards"] = rewards
            buf["rewards"] = through(norm.norm, rewards)
            # the critic predicts normalised returns; GAE runs in raw reward units
            values = through(norm.unnorm, values)
            next_values = through(norm.unnorm, next_values)
            raw_mean = rewards.reshape(P, -1).mean(1)
            logs.update({REWARDS.unnormalized_task_rewards: raw_mean, REWARDS.norm_var: norm.var.float().squeeze(-1),
                         REWARDS.pre_norm_reward: raw_mean,
                         REWARDS.post_norm_reward: buf["rewards"].reshape(P, -1).mean(1)})
        logs[REWARDS.task_rewards] = buf["rewards"].reshape(P, -1).mean(1)

        advantages = losses.compute_gae(rewards, values, next_values, buf["dones"],
                                        self.hp.knob("gamma", torch.float64), self.hp.knob("tau", torch.float64),
                                        time_dim=1)
        returns = advantages + values
        if c.normalize_rewards:
            returns = through(norm.norm, returns)
        finite = torch.isfinite(returns).reshape(P, -1).all(1) | ~self.active
        if not bool(finite.all()):
            member = int((~finite).nonzero()[0])
            raise FloatingPointError(f"non-finite returns of member {member} at epoch {self.epochs[member]}")
        buf["returns"] = returns.unsqueeze(-1)
        weight = self.hp.knob("task_reward_w")
        buf["advantages"] = advantages * (weight.unsqueeze(-1) if torch.is_tensor(weight) else weight)
        return logs

    # ------------------------------------------------------------------ optimisation
    def optimize(self, buf: dict[str, torch.Tensor]) -> list[dict[str, float]]:
        """Advantage normalisation, then the minibatch passes; per-member means of every metric."""
        c = self.config
        P, T, N = self.num_members, self.num_steps, self.num_envs
        advantages, adv_logs, ema_logs = self.adv_norm(buf["advantages"].reshape(P, -1), self.active)
        buf["advantages"] = advantages.view(P, T, N)
        # env-major flattening per member: row = env * T + t
        data = {k: v.transpose(1, 2).reshape(P, N * T, *v.shape[3:]) for k, v in buf.items()}
        for key, value in data.items():
            if value.is_floating_point():
                finite = torch.isfinite(value).reshape(P, -1).all(1) | ~self.active
                if not bool(finite.all()):
                    member = int((~finite).nonzero()[0])
                    raise FloatingPointError(f"non-finite {key!r} in the training batch of member {member} "
                                             f"at epoch {self.epochs[member]}")

        rollout = PackedRollout(data)
        size = N * T
        num_batches = math.ceil(size * c.num_mini_epochs / c.batch_size)
        batches_per_pass = size // c.batch_size
        acc = MeanAccumulator(P)
        acc.add(adv_logs, self.active)
        acc.add(ema_logs, self.active & self.hp.adv_enabled & self.hp.adv_use_ema)
        self.skip_updates = torch.zeros(P, dtype=torch.bool, device=self.device)
        self.model.train()
        perm = self._permutations(size)
        for i in range(num_batches):
            j = i % batches_per_pass
            if j == 0 and i > 0:
                perm = self._permutations(size)
            idx = perm[:, j * c.batch_size:(j + 1) * c.batch_size]
            batch = TensorDict(rollout.gather(idx), batch_size=[P, c.batch_size])
            self.optimization_step(batch, acc)
        self.model.eval()
        return acc.means()

    def _permutations(self, size: int) -> torch.Tensor:
        """[P, size]: member p's minibatch order from member p's own generator."""
        return torch.stack([torch.randperm(size, generator=g) for g in self.shuffle_generators]).to(self.device)

    def _set_normalizer_members(self, network: str, members: torch.Tensor) -> None:
        for module in self.normalizers[network]:
            module.update_members = members

    def optimization_step(self, batch: TensorDict, acc: MeanAccumulator) -> None:
        """One minibatch: actor loss for every member, then the update of the members not skipped."""
        c, hp = self.config, self.hp
        self._set_normalizer_members("actor", self.active)
        loss, logs, mu = actor_objective(self.model, batch, hp, c.l2c2)
        if c.adaptive_lr.enabled:
            logs.update(self.adapt_learning_rates(batch, mu))
        # the skip holds for the rest of this iteration, this batch included (no threshold: inf)
        self.skip_updates |= logs[ACTOR.clip_frac].double() > hp.clip_frac_threshold
        logs[ACTOR.update_skipped] = self.skip_updates.float()
        acc.add(logs, self.active)
        updating = self.active & ~self.skip_updates
        if not bool(updating.any()):
            return
        self._set_normalizer_members("critic", updating)
        critic_total, critic_logs = critic_objective(self.model, batch, hp)
        # Actor and critic share no parameters, nor do members: one backward pass of the sum gives
        # each network of each member exactly its own loss's gradients; each is then checked,
        # clipped and stepped on its own.
        for flat in self.flat.values():
            flat.zero_grad()
        with quiet_layout_warning():
            (loss.sum() + critic_total.sum()).backward()
        step_logs = {}
        for name in NETWORKS:
            step_logs.update(self.step_network(name, updating))
        acc.add({**critic_logs, **step_logs}, updating)

    def step_network(self, name: str, members: torch.Tensor) -> dict[str, torch.Tensor]:
        """Check, clip and step one network's gradients for ``members`` (skip bad ones)."""
        c = self.config
        step = inspect_and_clip(self.flat[name], self.hp.gradient_clip_val, c.check_grad_mag, c.fail_on_bad_grads,
                                name, members)
        self.optimizers[name].step(members & ~step.bad)
        logs = {grad_norm_before_clip(name): step.norm_before_clip, grad_norm_after_clip(name): step.norm_after_clip,
                bad_grads_count(name): step.bad.float()}
        if step.layer_block is not None:  # one [P, layers] block, split into keys only at the end
            logs[tuple(grad_layer(name, layer) for layer in step.layer_names)] = step.layer_block
        return logs

    def adapt_learning_rates(self, batch: TensorDict, mu: torch.Tensor) -> dict[str, torch.Tensor]:
        """KL-driven LR schedule for both networks, per member."""
        c = self.config.adaptive_lr
        kl = losses.gaussian_kl_same_std(mu.detach(), batch.get("mean_action"),
                                         self.model.actor.logstd.detach().unsqueeze(1)).double()
        for optimizer in self.optimizers.values():
            old = optimizer.lr
            lowered, raised = (old / 1.5).clamp(min=c.min_lr), (old * 1.5).clamp(max=c.max_lr)
            optimizer.lr = torch.where(kl > 2.0 * c.desired_kl, lowered,
                                       torch.where((kl > 0.0) & (kl < c.desired_kl / 2.0), raised, old))
        return {ACTOR.kl: kl.float(), INFO.actor_lr: self.optimizers["actor"].lr.clone(),
                INFO.critic_lr: self.optimizers["critic"].lr.clone()}

    # ------------------------------------------------------------------ the loop
    def _active_members(self) -> list[int]:
        return [p for p in range(self.num_members) if bool(self.active[p])]

    def train_iteration(self) -> list[dict[str, float] | None]:
        """One iteration of every active member; its metrics per member (None: an empty slot)."""
        iteration_start = time.time()
        members = self._active_members()
        buf, rollout_logs = self.collect_rollout()
        target_logs = self.compute_targets(buf)
        opt_logs = self.optimize(buf)
        targets = {k: v.tolist() for k, v in target_logs.items()}
        out: list[dict[str, float] | None] = [None] * self.num_members
        for p in members:
            logs = {**rollout_logs[p], **opt_logs[p], **{k: v[p] for k, v in targets.items()}}
            logs[INFO.epoch] = float(self.epochs[p])
            self.epochs[p] += 1
            out[p] = logs
        for p in members:
            for name in periodic_checkpoints(self.config, self.epochs[p]):
                self.save_checkpoint(name, [p])

        due = [p for p in members if self._force_eval[p] or (self.evaluator is not None
                                                              and self.evaluator.due(self.epochs[p]))]
        if self.evaluator is not None and due:
            for p, metrics in self.evaluate(due).items():
                out[p].update(metrics)
        self._force_eval = [False] * self.num_members

        manager = self.config.max_episode_length_manager
        if manager is not None and members:  # one env limit for all: the least-trained member's
            self.env.max_episode_length = max_episode_length(manager, min(self.epochs[p] for p in members))
        self.env.on_epoch_end(max(self.epochs))

        seconds = time.time() - iteration_start
        frames = self.num_steps * self.num_envs
        for p in members:
            total = self.elapsed(p)
            out[p].update({INFO.frames: float(self.step_counts[p]), INFO.gframes: self.step_counts[p] / 1e9,
                           INFO.sps: frames / seconds, TIMES.fps_last_epoch: frames / seconds,
                           TIMES.fps_total: self.step_counts[p] / max(total, 1e-9),
                           TIMES.last_epoch_seconds: seconds, TIMES.training_minutes: total / 60.0,
                           TIMES.training_hours: total / 3600.0})
        return out

    def elapsed(self, member: int = 0) -> float:
        return self.time_offsets[member] + time.time() - self.start_times[member]

    def member_done(self, member: int) -> bool:
        """Member ``member`` has trained its budget (max epochs, or training_early_termination)."""
        stop_at = self.hp.configs[member].training_early_termination
        return (self.epochs[member] >= self.max_epochs_per_member[member]
                or (stop_at is not None and self.step_counts[member] >= stop_at))

    def should_stop(self) -> bool:
        return not any(bool(self.active[p]) and not self.member_done(p) for p in range(self.num_members))

    def step(self) -> tuple[list[dict[str, float] | None], list[int]]:
        """One iteration of ``fit``: each member's metrics (None: an empty slot) and the members
        that reached their budget with it. Those are evaluated once more if the iteration did
        not evaluate them (every run ends with a score), their last.ckpt is written and their
        slots are closed (``insert_member`` may start a new member there)."""
        logs = self.train_iteration()
        finishing = [p for p in self._active_members() if self.member_done(p)]
        unevaluated = [p for p in finishing if EVAL.episode_reward not in logs[p]]
        if self.evaluator is not None and unevaluated:
            for p, metrics in self.evaluate(unevaluated).items():
                logs[p].update(metrics)
        for p in finishing:
            self.save_checkpoint("last.ckpt", [p])
            self.active[p] = False
        return logs, finishing

    def fit(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Train every member to its budget; returns each member's final evaluation ({} without one).

        ``on_iteration(member, metrics)`` runs after each member's iteration; if it raises, every
        member's last.ckpt is written and the exception propagates."""
        final = [{} for _ in range(self.num_members)]
        while not self.should_stop():
            logs, finishing = self.step()
            for p in finishing:
                final[p] = self.last_eval[p] if EVAL.episode_reward in logs[p] else {}
            try:
                for p, member_logs in enumerate(logs):
                    if member_logs is not None and on_iteration is not None:
                        on_iteration(p, member_logs)
            except BaseException:
                self.save_checkpoint("last.ckpt")
                raise
        return final

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, members: Sequence[int] | None = None) -> dict[int, dict[str, float]]:
        """Evaluate ``members`` (default: all; their envs run at once, the others' are skipped)."""
        members = list(range(self.num_members)) if members is None else list(members)
        results = self.evaluator.evaluate(self.model.actor, self.num_members, members)
        out = {}
        for p in members:
            metrics = results[p]
            self.last_eval[p] = metrics
            score = metrics.get(EVAL.success_rate, metrics[EVAL.episode_reward])
            if score >= self.best_scores[p]:  # ties count, as in the reference
                self.best_scores[p] = score
                self.save_checkpoint("last.ckpt", [p])
                self.save_checkpoint("score_based.ckpt", [p])
            metrics[EVAL.best_score] = self.best_scores[p]
            out[p] = metrics
        return out

    # ------------------------------------------------------------------ members come and go
    def remove_member(self, member: int) -> None:
        """Stop training slot ``member`` (a pruned trial): its state stays but nothing moves it."""
        self.active[member] = False
        self.output_dirs[member] = None

    @torch.no_grad()
    def insert_member(self, member: int, config: PPOAgentConfig | None, seed: int,
                      output_dir: Path | str | None = None) -> None:
        """Start a new member in slot ``member``, as a fresh single run with ``seed`` and ``config``
        would start: fresh weights, optimizer state, normalisers, RNG streams and envs."""
        config = config if config is not None else self.config
        others = [c for p, c in enumerate(self.hp.configs) if p != member]
        check_population([*others[:1], config])
        self.hp.replace(member, config)
        self.seeds[member] = seed
        generator = torch.Generator().manual_seed(seed)
        self.init_generators[member] = generator
        noise = generator if self.device.type == "cpu" else torch.Generator(device=self.device).manual_seed(seed)
        self.noise_generators[member] = noise
        self.model.actor.generators = self.noise_generators
        # the draws of a fresh run's first forward: actor weights, one noise draw, critic weights
        for layer in self.actor_layers:
            layer.reset_member(member, generator)
        torch.randn((self.num_envs, self.model.actor.config.num_out), generator=noise, device=noise.device)
        for layer in self.critic_layers:
            layer.reset_member(member, generator)
        self.shuffle_generators[member] = torch.Generator().manual_seed(seed)
        self.model.actor.logstd[member] = self.hp.actor_logstd[member]
        for modules in self.normalizers.values():
            for module in modules:
                if module.obs_norm is not None:
                    module.obs_norm.reset_member(member)
        self.optimizers["actor"].reset_member(member, float(self.hp.actor_lr[member]))
        self.optimizers["critic"].reset_member(member, float(self.hp.critic_lr[member]))
        self.reward_norm.gamma.copy_(self.hp.gamma)
        self.reward_norm.clamp_value.copy_(self.hp.reward_clamp)
        self.reward_norm.reset_member(member)
        self.adv_norm.mean_ema[member] = 0.0
        self.adv_norm.std_ema[member] = 1.0
        self._reset_member_envs(member, seed)
        self.epochs[member] = 0
        self.step_counts[member] = 0
        self.best_scores[member] = -math.inf
        self.max_epochs_per_member[member] = max_epochs(config, self.num_envs, self.num_steps)
        self.start_times[member], self.time_offsets[member] = time.time(), 0.0
        self.episode_return[member] = 0.0
        self.episode_length[member] = 0.0
        self.last_episode_metrics[member] = {INFO.episode_reward: 0.0, INFO.episode_length: 0.0}
        self.last_eval[member] = {}
        self._force_eval[member] = False
        self.output_dirs[member] = Path(output_dir) if output_dir is not None else None
        self.active[member] = True

    def _reset_member_envs(self, member: int, seed: int) -> None:
        """The member's envs as a fresh run sees them: built with ``seed``, reset once by the
        agent's set-up, and reset again at the first step."""
        N = self.num_envs
        self.env.reset_member(member, seed)
        self.env.reset(torch.arange(member * N, (member + 1) * N, device=self.device))
        self.done[member] = True
        if self.evaluator is not None:
            self.evaluator.env.reset_member(member, seed + EVAL_SEED_OFFSET)
            self.evaluator.refresh_initial_state()

    # ------------------------------------------------------------------ checkpoints
    def member_state_dict(self, member: int) -> dict:
        """Member ``member``'s whole training state in the single-agent checkpoint format."""
        p = member
        state = {
            "model": {k: v[p].cpu().clone() for k, v in self.model.state_dict().items()},
            "epoch": self.epochs[p], "step_count": self.step_counts[p], "best_evaluated_score": self.best_scores[p],
            "training_seconds": self.elapsed(p),
            "running_reward_norm": self.reward_norm.member_state_dict(p),
            "actor_optimizer": self.optimizers["actor"].member_state_dict(p, self._num_module_params["actor"]),
            "critic_optimizer": self.optimizers["critic"].member_state_dict(p, self._num_module_params["critic"]),
            "adv_mean_ema": self.adv_norm.mean_ema[p].cpu().clone(), "adv_std_ema": self.adv_norm.std_ema[p].cpu().clone(),
            "adaptive_lr": {"actor_lr": float(self.optimizers["actor"].lr[p]),
                            "critic_lr": float(self.optimizers["critic"].lr[p])},
            "evaluator": {"eval_count": self.evaluator.eval_count if self.evaluator else 0},
            # What an exact resume needs beyond the reference's contents:
            "rng": {"torch": self.init_generators[p].get_state(), "shuffle": self.shuffle_generators[p].get_state()},
            "env": self._env_state(p), "max_episode_length": int(self.env.max_episode_length),
            "done_ids": self.done[p].nonzero().squeeze(-1).cpu(),
            "episode": {"return": self.episode_return[p].cpu().clone(), "length": self.episode_length[p].cpu().clone(),
                        "last": dict(self.last_episode_metrics[p])},
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = self.noise_generators[p].get_state()
        return state

    def state_dict(self) -> dict:
        """The single agent's checkpoint (member 0 of a population of one)."""
        return self.member_state_dict(0)

    def _env_state(self, member: int) -> dict:
        return self.env.member_state_dict(member) if self.num_members > 1 else self.env.state_dict()

    def save_checkpoint(self, name: str, members: Sequence[int] | None = None) -> list[Path]:
        """Write ``name`` into each member's output dir (members without one are skipped)."""
        members = range(self.num_members) if members is None else members
        written = []
        for p in members:
            directory = self.output_dirs[p]
            if directory is None:
                continue
            path = directory / name
            ckpt.save_atomic(self.member_state_dict(p), path)
            if name == "last.ckpt" and self.config.save_inference_checkpoint:
                ckpt.save_atomic({"model": {k: v[p].cpu().clone() for k, v in self.model.state_dict().items()},
                                  "epoch": self.epochs[p], "step_count": self.step_counts[p]},
                                 directory / "inference_last.ckpt")
            written.append(path)
        return written

    @torch.no_grad()
    def load_checkpoint(self, path: Path | str, load_training_state: bool = True, member: int = 0) -> None:
        """Load a single-agent checkpoint (a run's, or a member's) into slot ``member``."""
        p = member
        state = ckpt.load_checked(path)
        current = {k: v[p] for k, v in self.model.state_dict().items()}
        ckpt.check_model_state(state["model"], current, path)
        for key, value in state["model"].items():
            current[key].copy_(value)
        if not self.model.actor.config.learnable_std:
            # a fixed std comes from the config, not the checkpoint (as in the reference)
            self.model.actor.logstd[p] = self.hp.actor_logstd[p]
        self._force_eval[p] = True
        if not load_training_state:
            return
        try:
            self.epochs[p] = state["epoch"]
            self.step_counts[p] = state["step_count"]
            self.best_scores[p] = state["best_evaluated_score"]
            self.time_offsets[p] = state["training_seconds"]
            self.start_times[p] = time.time()
            self.reward_norm.load_member_state_dict(p, state["running_reward_norm"])
            self.optimizers["actor"].load_member_state_dict(p, state["actor_optimizer"])
            self.optimizers["critic"].load_member_state_dict(p, state["critic_optimizer"])
            self.optimizers["actor"].lr[p] = state["adaptive_lr"]["actor_lr"]
            self.optimizers["critic"].lr[p] = state["adaptive_lr"]["critic_lr"]
            self.adv_norm.mean_ema[p] = state["adv_mean_ema"]
            self.adv_norm.std_ema[p] = state["adv_std_ema"]
            if self.evaluator is not None:
                self.evaluator.eval_count = max(self.evaluator.eval_count, state["evaluator"]["eval_count"])
            self.init_generators[p].set_state(state["rng"]["torch"])
            self.shuffle_generators[p].set_state(state["rng"]["shuffle"])
            if "cuda" in state["rng"] and self.device.type == "cuda":
                self.noise_generators[p].set_state(state["rng"]["cuda"])
            if self.num_members > 1:
                self.env.load_member_state_dict(p, state["env"])
            else:
                self.env.load_state_dict(state["env"])
            self.env.max_episode_length = state["max_episode_length"]
            self.done[p] = False
            self.done[p, state["done_ids"].to(self.device)] = True
            self.episode_return[p] = state["episode"]["return"].to(self.device)
            self.episode_length[p] = state["episode"]["length"].to(self.device)
            self.last_episode_metrics[p] = dict(state["episode"]["last"])
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            raise ckpt.CheckpointError(f"checkpoint {path} lacks or mismatches training state ({err!r}); "
                                       "load it as a warm start (load_training_state=false) instead") from err


EVAL_SEED_OFFSET = 1_000_003  # the evaluation envs' seed is the member's seed plus this
