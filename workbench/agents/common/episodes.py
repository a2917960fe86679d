"""Episode returns and lengths of a whole rollout at once, instead of step by step.

Per env, an episode that ends at step t began after the previous done of that env in the
rollout, or, if there was none, before the rollout (its running sum carried in). With the
rollout's cumulative rewards that is one difference per finished episode: no Python work
per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FinishedEpisodes:
    """Per env (the rollout's shape without its time dim): episodes ended, their returns, lengths."""
    count: torch.Tensor
    return_sum: torch.Tensor
    length_sum: torch.Tensor


def account_episodes(rewards: torch.Tensor, dones: torch.Tensor, running_return: torch.Tensor,
                     running_length: torch.Tensor) -> FinishedEpisodes:
    """Finished episodes of a [T, ...envs] rollout; updates ``running_return``/``running_length``
    ([...envs], the unfinished episodes' sums) in place, as a step-by-step loop would leave them."""
    T = rewards.shape[0]
    steps = torch.arange(T, device=rewards.device).view(T, *([1] * (dones.dim() - 1))).expand_as(dones)
    # float64 sums: a difference of two long cumulative sums must not lose the small ones
    cum = torch.cat((torch.zeros_like(rewards[:1], dtype=torch.float64), rewards.double().cumsum(0)))
    # last done strictly before t (-1: none in this rollout), then the episode's first step
    last_done = torch.where(dones, steps, torch.full_like(steps, -1)).cummax(0).values
    start = torch.cat((torch.full_like(last_done[:1], -1), last_done[:-1])) + 1  # [T, N]
    carried = start == 0  # the episode began before the rollout

    ep_return = cum[1:] - cum.gather(0, start) + carried * running_return.double()
    ep_length = (steps - start + 1) + carried * running_length.long()
    finished = FinishedEpisodes(dones.sum(0).double(), (ep_return * dones).sum(0),
                                (ep_length * dones).sum(0).double())

    still_carried = ~dones.any(0)  # no done at all: the old episode runs on
    tail_start = (last_done[-1] + 1).clamp(max=T)
    tail_return = cum[-1] - cum.gather(0, tail_start.unsqueeze(0)).squeeze(0)
    running_return.copy_(tail_return + still_carried * running_return.double())
    running_length.copy_((T - tail_start) + still_carried * running_length)
    return finished
