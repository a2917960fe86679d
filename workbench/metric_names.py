"""The names of the logged metrics, declared once.

The agent writes them, the tracker and W&B store them, the sweep objective and the analysis
code read them: all of them import the names from here. The key strings are a contract (listed
in docs/tracking.md; sweep files, W&B dashboards and reports name them): change them only through an issue.
"""
from __future__ import annotations


class ACTOR:
    ppo_loss = "actor/ppo_loss"
    bounds_loss = "actor/bounds_loss"
    extra_loss = "actor/extra_loss"
    model_loss = "actor/model_loss"
    entropy = "actor/entropy"
    entropy_loss = "actor/entropy_loss"
    std_mean = "actor/std_mean"
    clip_frac = "actor/clip_frac"
    approx_kl = "actor/approx_kl"
    ratio_mean = "actor/ratio_mean"
    ratio_std = "actor/ratio_std"
    ratio_max = "actor/ratio_max"
    update_skipped = "actor/update_skipped"
    kl = "actor/kl"
    l2c2_loss = "actor/l2c2_loss"
    l2c2_weighted = "actor/l2c2_weighted"
    l2c2_input_dist = "actor/l2c2_input_dist"
    l2c2_output_dist = "actor/l2c2_output_dist"
    total_loss = "losses/actor_loss"


class CRITIC:
    total_loss = "losses/critic_loss"
    model_loss = "critic/model_loss"
    value_clip_frac = "critic/value_clip_frac"
    explained_variance = "critic/explained_variance"
    value_mean = "critic/value_mean"
    value_std = "critic/value_std"
    return_mean = "critic/return_mean"
    return_std = "critic/return_std"
    error_mean = "critic/error_mean"
    error_std = "critic/error_std"


def grad_norm_before_clip(network: str) -> str:
    return f"{network}/grad_norm_before_clip"


def grad_norm_after_clip(network: str) -> str:
    return f"{network}/grad_norm_after_clip"


def bad_grads_count(network: str) -> str:
    return f"{network}/bad_grads_count"


def grad_layer(network: str, parameter: str) -> str:
    return f"grad_layers/{network}/{parameter}"


class INFO:
    frames = "info/frames"
    gframes = "info/gframes"
    sps = "info/sps"
    episode_reward = "info/episode_reward"
    episode_length = "info/episode_length"
    episodes_finished = "info/episodes_finished"
    actor_lr = "info/actor_lr"
    critic_lr = "info/critic_lr"
    epoch = "epoch"


class EVAL:
    episode_reward = "eval/episode_reward"
    episode_length = "eval/episode_length"
    num_episodes = "eval/num_episodes"
    num_evaluated = "eval/num_evaluated"
    success_rate = "eval/success_rate"
    best_score = "eval/best_score"


class REWARDS:
    task_rewards = "rewards/task_rewards"
    unnormalized_task_rewards = "rewards/unnormalized_task_rewards"
    norm_var = "reward_norm/var"
    pre_norm_reward = "reward_norm/pre_norm_reward"
    post_norm_reward = "reward_norm/post_norm_reward"


class TIMES:
    fps_last_epoch = "times/fps_last_epoch"
    fps_total = "times/fps_total"
    last_epoch_seconds = "times/last_epoch_seconds"
    training_minutes = "times/training_minutes"
    training_hours = "times/training_hours"
