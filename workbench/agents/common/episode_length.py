"""Episode-length curriculum: the env's limit, set after each iteration (docs/agent.md, "Episode-length curriculum")."""
from __future__ import annotations

from workbench.agents.base.config import MaxEpisodeLengthManagerConfig


def max_episode_length(config: MaxEpisodeLengthManagerConfig, epoch: int) -> int:
    """Linear ramp from start_length to end_length over transition_epochs."""
    if config.transition_epochs == 0:
        return config.start_length
    progress = min(epoch / config.transition_epochs, 1.0)
    return int(config.start_length + progress * (config.end_length - config.start_length))
