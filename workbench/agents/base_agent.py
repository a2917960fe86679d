"""What every agent shares: the epoch budget, stop conditions and periodic checkpoints (ProtoMotions' BaseAgent)."""
from __future__ import annotations

import time
from pathlib import Path


class BaseAgent:
    """Subclasses set config, num_envs, num_steps, epoch, step_count, start_time, time_offset
    and implement ``save_checkpoint(name)``."""

    config: object
    num_envs: int
    num_steps: int
    epoch: int
    step_count: int
    start_time: float
    time_offset: float

    def save_checkpoint(self, name: str) -> Path | None:
        raise NotImplementedError

    def _max_epochs(self) -> int:
        c = self.config
        if c.training_max_iterations is not None:
            if c.training_max_iterations <= 0:
                raise ValueError(f"training_max_iterations must be >= 1 or None, got {c.training_max_iterations}")
            return c.training_max_iterations
        return c.training_max_steps // self.num_envs // self.num_steps

    def _check_batch_size(self) -> None:
        rollout = self.num_envs * self.num_steps
        if self.config.batch_size <= 0 or rollout % self.config.batch_size:
            raise ValueError(f"batch_size={self.config.batch_size} must divide num_envs x num_steps = "
                             f"{self.num_envs} x {self.num_steps} = {rollout}")

    def elapsed(self) -> float:
        return self.time_offset + time.time() - self.start_time

    def should_stop(self) -> bool:
        stop_at = self.config.training_early_termination
        return self.epoch >= self.max_epochs or (stop_at is not None and self.step_count >= stop_at)

    def save_periodic_checkpoints(self) -> None:
        c = self.config
        if c.save_epoch_checkpoint_every and self.epoch % c.save_epoch_checkpoint_every == 0:
            self.save_checkpoint(f"epoch_{self.epoch}.ckpt")
        if c.save_last_checkpoint_every and self.epoch % c.save_last_checkpoint_every == 0:
            self.save_checkpoint("last.ckpt")
