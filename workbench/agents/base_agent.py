"""What every agent shares: the epoch budget and the periodic checkpoints (ProtoMotions' BaseAgent),
per member of a population."""
from __future__ import annotations


def max_epochs(config, num_envs: int, num_steps: int) -> int:
    """Iterations a member trains: ``training_max_iterations``, else its steps over the rollout size."""
    if config.training_max_iterations is not None:
        if config.training_max_iterations <= 0:
            raise ValueError(f"training_max_iterations must be >= 1 or None, got {config.training_max_iterations}")
        return config.training_max_iterations
    return config.training_max_steps // num_envs // num_steps


def check_batch_size(config, num_envs: int, num_steps: int) -> None:
    rollout = num_envs * num_steps
    if config.batch_size <= 0 or rollout % config.batch_size:
        raise ValueError(f"batch_size={config.batch_size} must divide num_envs x num_steps = "
                         f"{num_envs} x {num_steps} = {rollout}")


def periodic_checkpoints(config, epoch: int) -> list[str]:
    """The checkpoint names due after ``epoch`` iterations."""
    names = []
    if config.save_epoch_checkpoint_every and epoch % config.save_epoch_checkpoint_every == 0:
        names.append(f"epoch_{epoch}.ckpt")
    if config.save_last_checkpoint_every and epoch % config.save_last_checkpoint_every == 0:
        names.append("last.ckpt")
    return names


class BaseAgent:
    """The base every agent derives from (the ``_target_`` of BaseAgentConfig); its shared logic
    is the functions above, which take one member's config."""
