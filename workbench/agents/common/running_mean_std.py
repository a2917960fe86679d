"""Running moments for observation and reward normalisation (float64 buffers), per member.

Every buffer has a leading member dimension: ``mean``/``var`` are ``[P, *shape]``, ``count`` is
``[P]``. Inputs are ``[P, batch, *shape]`` and each member's moments come from its own rows; a
population of one may also pass ``[batch, *shape]``.
"""
from __future__ import annotations

import torch
from torch import nn

EPS = 1e-5


def batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-member mean and population variance of ``x`` ([P, B, ...]) over dim 1."""
    # two passes, the same for every P (so a member's moments are its single run's to the bit);
    # torch's CPU var over a middle dim is ~5x slower on a population's [P, 64, 17]
    x = x.double()
    mean = x.mean(1, keepdim=True)
    var = (x - mean).square_().mean(1)
    return mean.squeeze(1), var, x.shape[1]


class RunningMeanStd(nn.Module):
    """Moments of a stream, updated by Welford's pairwise combination or by EMA.

    ``norm(x) = clamp((x - mean) / sqrt(var + 1e-5), +-clamp)``; ``unnorm`` inverts it.
    """

    def __init__(self, shape: tuple[int, ...], clamp_value: float | torch.Tensor = 5.0,
                 ema_decay: float | None = None, shift_mean: bool = True, num_members: int = 1):
        super().__init__()
        self.shape = tuple(shape)
        self.num_members = num_members
        self.ema_decay = ema_decay
        self.shift_mean = shift_mean
        self.register_buffer("mean", torch.zeros((num_members, *shape), dtype=torch.float64))
        self.register_buffer("var", torch.ones((num_members, *shape), dtype=torch.float64))
        self.register_buffer("count", torch.ones((num_members,), dtype=torch.float64))
        # per-member clamp (a sweep knob for the reward normaliser), not state
        clamp = torch.as_tensor(clamp_value, dtype=torch.float64).expand(num_members).clone()
        self.register_buffer("clamp_value", clamp, persistent=False)

    @torch.no_grad()
    def update(self, x: torch.Tensor, members: torch.Tensor | None = None) -> None:
        """Record ``x`` ([P, B, *shape]); only the members where ``members`` is set, if given."""
        if x.dim() == len(self.shape) + 1:  # one member's [B, *shape]
            x = x.unsqueeze(0)
        mean_b, var_b, n_b = batch_moments(x)
        if self.ema_decay is not None:
            d = self.ema_decay
            new_mean, new_var, new_count = d * self.mean + (1 - d) * mean_b, d * self.var + (1 - d) * var_b, \
                self.count + n_b
        else:
            n_a = self._expand(self.count)
            n = n_a + n_b
            delta = mean_b - self.mean
            new_var = (self.var * n_a + var_b * n_b + delta.square() * n_a * n_b / n) / n
            new_mean = self.mean + delta * n_b / n
            new_count = self.count + n_b
        if members is None:
            self.mean.copy_(new_mean), self.var.copy_(new_var), self.count.copy_(new_count)
            return
        rows = self._expand(members)
        self.mean.copy_(torch.where(rows, new_mean, self.mean))
        self.var.copy_(torch.where(rows, new_var, self.var))
        self.count.copy_(torch.where(members, new_count, self.count))

    def _expand(self, per_member: torch.Tensor) -> torch.Tensor:
        return per_member.view(self.num_members, *([1] * len(self.shape)))

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float | torch.Tensor]:
        """Mean, sqrt(var + eps) and the clamp, shaped to broadcast over ``x`` and in its dtype;
        recomputed only after the float64 buffers change. The clamp is a float when every member
        has the same (the normal case: one clamp op)."""
        single = x.dim() == len(self.shape) + 1  # a population of one without its member dim
        key = (x.dtype, single, self.mean.device, self.mean._version, self.var._version, id(self.mean),
               id(self.var), self.clamp_value._version)  # a new member may bring its own clamp
        cached = self.__dict__.get("_cache")
        if cached is None or cached[0] != key:
            view = self.shape if single else (self.num_members, 1, *self.shape)
            clamp = self.clamp_value
            if bool((clamp == clamp[0]).all()):
                clamp = float(clamp[0])
            else:
                clamp = clamp.view(self.num_members, *([1] * (len(self.shape) + 1))).to(x.dtype)
            cached = (key, self.mean.to(x.dtype).view(view), (self.var + EPS).sqrt().to(x.dtype).view(view), clamp)
            self.__dict__["_cache"] = cached
        return cached[1], cached[2], cached[3]

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: [P, B, *shape] (or [B, *shape] for one member)."""
        mean, std, clamp = self._moments(x)
        centred = x - mean if self.shift_mean else x
        return _clamp(centred / std, clamp)

    def unnorm(self, y: torch.Tensor) -> torch.Tensor:
        mean, std, clamp = self._moments(y)
        x = _clamp(y, clamp) * std
        return x + mean if self.shift_mean else x

    # ------------------------------------------------------------------ one member
    @torch.no_grad()
    def reset_member(self, member: int) -> None:
        self.mean[member].zero_()
        self.var[member].fill_(1.0)
        self.count[member] = 1.0

    def member_state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s buffers in the single-agent layout (no member dimension)."""
        return {"mean": self.mean[member].cpu().clone(), "var": self.var[member].cpu().clone(),
                "count": self.count[member].cpu().clone()}

    @torch.no_grad()
    def load_member_state_dict(self, member: int, state: dict[str, torch.Tensor]) -> None:
        self.mean[member].copy_(state["mean"].reshape(self.shape))
        self.var[member].copy_(state["var"].reshape(self.shape))
        self.count[member] = float(state["count"])


def _clamp(x: torch.Tensor, bound: float | torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(bound):
        return x.clamp(-bound, bound)
    return torch.maximum(torch.minimum(x, bound), -bound)


class RewardNormalizer(RunningMeanStd):
    """Scales rewards by the std of the per-env discounted return (no mean shift), per member.

    The return ``G <- gamma * G * (1 - terminated) + r`` resets only on termination, as in the
    reference. Unlike the reference, G is checkpointed so a resumed run continues bit-for-bit.
    Rollouts are ``[P, T, N]``; ``gamma`` and the clamp may differ between members.
    """

    def __init__(self, num_envs: int, gamma: float | torch.Tensor, clamp_value: float | torch.Tensor = 5.0,
                 ema_decay: float | None = None, device: torch.device | str = "cpu", num_members: int = 1):
        super().__init__((1,), clamp_value=clamp_value, ema_decay=ema_decay, shift_mean=False,
                         num_members=num_members)
        gamma = torch.as_tensor(gamma, dtype=torch.float64).expand(num_members).clone()
        self.register_buffer("gamma", gamma, persistent=False)
        self.register_buffer("discounted_return", torch.zeros(num_members, num_envs))
        self.to(device)

    def _gamma(self) -> torch.Tensor:
        return self.gamma.to(self.discounted_return.dtype).unsqueeze(1)

    @torch.no_grad()
    def record_reward(self, reward: torch.Tensor, terminated: torch.Tensor,
                      members: torch.Tensor | None = None) -> None:
        """One env step: ``reward``, ``terminated`` are [P, N]."""
        g = self.discounted_return
        g.mul_(self._gamma() * (~terminated)).add_(reward)
        self.update(g.unsqueeze(-1), members)

    @torch.no_grad()
    def record_rollout(self, rewards: torch.Tensor, terminated: torch.Tensor,
                       members: torch.Tensor | None = None) -> None:
        """``record_reward`` for every step of a [P, T, N] rollout, with one statistics update.

        Welford's pooled moments of all T x N returns equal the step-by-step combination (up to
        rounding), and the reference reads the statistics only after the rollout. EMA statistics
        depend on the order, so they are still updated step by step.
        """
        P, T = rewards.shape[:2]
        returns = torch.empty_like(rewards)
        g = self.discounted_return
        gamma = self._gamma()
        for t in range(T):
            g.mul_(gamma * (~terminated[:, t])).add_(rewards[:, t])
            returns[:, t] = g
            if self.ema_decay is not None:
                self.update(g.unsqueeze(-1), members)
        if self.ema_decay is None:
            self.update(returns.reshape(P, -1, 1), members)

    def member_state_dict(self, member: int) -> dict[str, torch.Tensor]:
        state = super().member_state_dict(member)
        state["discounted_return"] = self.discounted_return[member].cpu().clone()
        return state

    @torch.no_grad()
    def load_member_state_dict(self, member: int, state: dict[str, torch.Tensor]) -> None:
        super().load_member_state_dict(member, state)
        if "discounted_return" in state:
            self.discounted_return[member].copy_(state["discounted_return"])

    @torch.no_grad()
    def reset_member(self, member: int) -> None:
        super().reset_member(member)
        self.discounted_return[member].zero_()
