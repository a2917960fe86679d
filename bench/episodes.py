"""Record every finished training episode's raw return, the way CleanRL's RecordEpisodeStatistics does."""
from __future__ import annotations

import torch


class EpisodeRecorder:
    """Wraps a batched env's ``step`` in place; ``returns``/``frames`` list each finished episode."""

    def __init__(self, env):
        self.env = env
        self.running = torch.zeros(env.num_envs, dtype=torch.float64)
        self.frames_seen = 0
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.frames: list[int] = []  # env steps taken when the episode ended
        self._length = torch.zeros(env.num_envs, dtype=torch.long)
        self._step = env.step
        env.step = self.step

    def step(self, action):
        result = self._step(action)
        reward = result.reward.detach().to("cpu", torch.float64)
        self.running += reward
        self._length += 1
        self.frames_seen += self.env.num_envs
        done = result.dones.detach().cpu()
        if done.any():
            for i in done.nonzero().flatten().tolist():
                self.returns.append(float(self.running[i]))
                self.lengths.append(int(self._length[i]))
                self.frames.append(self.frames_seen)
            self.running[done] = 0.0
            self._length[done] = 0
        return result
