"""Training progress for people: a bar on a terminal, plain periodic lines otherwise.

The bar (tqdm) shows elapsed time, ETA, steps/s and the latest training and evaluation returns
(one decimal). Without a terminal (a log file, a sweep worker, CI) every 10th iteration and the
last one print one line. Either way a line says when throughput falls far below the run's own
median: on a shared machine a torch process with more threads than free cores can slow down
10-30x (OpenMP threads waiting on each other), and nothing else would tell.
"""
from __future__ import annotations

import logging
import statistics
import sys

from workbench.metric_names import EVAL, INFO

# throughput below median / COLLAPSE after a few iterations is worth a line
COLLAPSE = 5.0
MIN_ITERATIONS = 5


def one_decimal(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


class Progress:
    def __init__(self, total_iterations: int, logger: logging.Logger, label: str = "", every: int = 10,
                 interactive: bool | None = None):
        self.total = total_iterations
        self.log = logger
        self.label = f"{label} " if label else ""
        self.every = every
        self.sps: list[float] = []
        self.eval_return: float | None = None
        self.warned = False
        interactive = sys.stderr.isatty() if interactive is None else interactive
        self.bar = None
        if interactive:
            from tqdm import tqdm
            self.bar = tqdm(total=total_iterations, desc=label.strip() or "train", unit="it", leave=True,
                            dynamic_ncols=True)

    def update(self, iteration: int, frames: int, metrics: dict[str, float]) -> None:
        """After ``iteration`` (1-based) of ``total``."""
        sps = metrics.get(INFO.sps)
        if sps is not None:
            self.sps.append(sps)
        if EVAL.episode_reward in metrics:
            self.eval_return = metrics[EVAL.episode_reward]
        train_return = metrics.get(INFO.episode_reward)
        if self.bar is not None:
            self.bar.n = min(iteration, self.total)
            self.bar.set_postfix_str(f"frames {frames} sps {sps or 0:.0f} return {one_decimal(train_return)} "
                                     f"eval {one_decimal(self.eval_return)}", refresh=True)
        elif iteration % self.every == 0 or iteration >= self.total:
            self.log.info("%sepoch %d/%d frames %d return %s eval %s sps %.0f", self.label, iteration, self.total,
                          frames, one_decimal(train_return), one_decimal(metrics.get(EVAL.episode_reward)), sps or 0)
        self._check_throughput()

    def _check_throughput(self) -> None:
        if self.warned or len(self.sps) < MIN_ITERATIONS:
            return
        median = statistics.median(self.sps)
        if self.sps[-1] * COLLAPSE < median:
            self.warned = True
            message = (f"{self.label}throughput fell to {self.sps[-1]:.0f} steps/s, {median / self.sps[-1]:.0f}x "
                       f"below this run's median ({median:.0f}): another process may be competing for the "
                       "cores; fewer threads (torch_threads=1) cannot collapse like this")
            if self.bar is not None:
                self.bar.write(message)
            else:
                self.log.warning(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
