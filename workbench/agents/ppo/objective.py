"""The whole PPO objective of one minibatch, per member: read it top to bottom.

Inputs are a minibatch TensorDict of shape [P, B] (P members, B samples each) holding the
rollout's ``action``, ``neglogp``, ``mean_action``, ``value`` (V_old), ``returns`` and the
normalised ``advantages``; the networks' fresh outputs come from ``model``. Every loss and
diagnostic is one value per member, ``[P]``; the optimizer minimises the sum over members,
which gives each member exactly its own gradients (members share no parameters).

    ratio      = exp(neglogp_old - neglogp_new)
    ppo        = mean(max(-A * ratio, -A * clamp(ratio, 1 - e_clip, 1 + e_clip)))
    bounds     = coef * mean(sum_i relu(mu_i - 1)^2 + relu(-1 - mu_i)^2)     (soft +-1 action bounds)
    l2c2       = lambda * out_dist / (in_dist + 1e-8)                        (optional smoothness)
    actor_loss = ppo + bounds + l2c2 + model_loss [- entropy_coef * H, only with a learnable std]

    V_clipped   = V_old + clamp(V - V_old, -e_clip, e_clip)                 (e_clip clips the value too)
    critic_loss = mean(max((V - R)^2, (V_clipped - R)^2)) + model_loss    (or mean((V - R)^2) unclipped)

There is no value coefficient and no shared loss: actor and critic are separate networks with
separate optimizers (ProtoMotions' design). R and V_old are in normalised-return units when
rewards are normalised.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase

from workbench.agents.ppo import losses
from workbench.agents.ppo.config import L2C2Config
from workbench.agents.ppo.model import PPOModel, gaussian_neglogp
from workbench.agents.ppo.population import MemberHyperparams
from workbench.metric_names import ACTOR, CRITIC


def actor_objective(model: PPOModel, batch: TensorDictBase, hp: MemberHyperparams, l2c2: L2C2Config
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The actor loss per member ([P]), its diagnostics ([P] each) and the new action means."""
    actor = model.actor
    mu, logstd = actor.distribution(batch)
    ratio = torch.exp(batch.get("neglogp") - gaussian_neglogp(batch.get("action"), mu, logstd))
    e_clip = hp.knob("e_clip", torch.float64)
    ppo = losses.ppo_actor_loss(batch.get("advantages"), ratio, e_clip)
    bounds_coef = hp.knob("bounds_loss_coef")
    bounds = torch.zeros_like(ppo) if bounds_coef == 0 else losses.bounds_loss(mu, bounds_coef)
    smooth = l2c2_terms(model, batch, mu, l2c2) if l2c2.enabled else {}
    model_loss = _per_member(model.compute_model_loss(batch), ppo)
    weighted_l2c2 = smooth.get(ACTOR.l2c2_weighted, torch.zeros_like(ppo))
    total = ppo + bounds + weighted_l2c2 + model_loss
    entropy = losses.gaussian_entropy(logstd).mean(-1)
    if actor.config.learnable_std:
        total = total - _as_tensor_of(hp.knob("entropy_coef"), total) * entropy

    with torch.no_grad():  # diagnostics: no autograd graph for them
        r = ratio.detach()
        logs = {ACTOR.ppo_loss: ppo, ACTOR.bounds_loss: bounds, ACTOR.extra_loss: weighted_l2c2,
                ACTOR.model_loss: model_loss, ACTOR.entropy: entropy,
                ACTOR.clip_frac: losses.clip_fraction(r, hp.knob("e_clip")), ACTOR.approx_kl: losses.approx_kl(r),
                ACTOR.ratio_mean: r.mean(-1), ACTOR.ratio_std: r.std(-1), ACTOR.ratio_max: r.amax(-1), **smooth}
        # ProtoMotions' "entropy_loss" is the entropy H itself (the loss subtracts entropy_coef * H),
        # and 0 with a fixed std, where no entropy term enters the loss; actor/entropy is H always
        if actor.config.learnable_std:
            logs[ACTOR.entropy_loss] = entropy
            logs[ACTOR.std_mean] = torch.exp(actor.logstd).mean(-1)
        else:
            logs[ACTOR.entropy_loss] = torch.zeros_like(ppo)
        logs[ACTOR.total_loss] = total
    return total, {k: v.detach() for k, v in logs.items()}, mu


def l2c2_terms(model: PPOModel, batch: TensorDictBase, mu_noisy: torch.Tensor, config: L2C2Config
               ) -> dict[str, torch.Tensor]:
    """Smoothness penalty between the actor's output on noisy and on clean observations.

    As in ProtoMotions, the pairs used are those whose noisy key is an actor input; the input
    distance is the mean squared difference pooled over all their elements (one sum of squares
    over one element count, per member)."""
    clean = batch.clone(False)
    squares = torch.zeros(mu_noisy.shape[0], device=mu_noisy.device)
    elements = 0
    for noisy_key in model.actor.in_keys:
        if noisy_key not in config.obs_pairs:
            continue
        noisy_x, clean_x = batch.get(noisy_key), batch.get(config.obs_pairs[noisy_key])
        per_member = (noisy_x - clean_x).reshape(noisy_x.shape[0], -1)
        squares = squares + per_member.square().sum(1).detach()
        elements += per_member.shape[1]
        clean.set(noisy_key, clean_x)
    if not elements:
        raise ValueError(f"l2c2.obs_pairs {dict(config.obs_pairs)} pairs none of the actor's inputs "
                         f"{model.actor.in_keys}")
    in_dist = squares / elements
    mu_clean, _ = model.actor.distribution(clean)
    out_dist = (mu_noisy - mu_clean).square().reshape(mu_noisy.shape[0], -1).mean(1)
    loss = out_dist / (in_dist + 1e-8)
    return {ACTOR.l2c2_loss: loss, ACTOR.l2c2_weighted: config.lambda_l2c2 * loss,
            ACTOR.l2c2_input_dist: in_dist, ACTOR.l2c2_output_dist: out_dist.detach()}


def critic_objective(model: PPOModel, batch: TensorDictBase, hp: MemberHyperparams
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The critic loss per member ([P]) and its diagnostics."""
    old_values, returns = batch.get("value").squeeze(-1), batch.get("returns").squeeze(-1)
    values = model.critic(batch).get("value").squeeze(-1)
    value_loss, value_clip_frac = losses.critic_loss(values, old_values, returns, hp.knob("e_clip"),
                                                     _clip_flag(hp))
    model_loss = _per_member(model.compute_model_loss(batch), value_loss)
    total = value_loss + model_loss
    with torch.no_grad():
        v, r = values.detach(), returns
        error = v - r
        logs = {CRITIC.total_loss: total.detach(), CRITIC.model_loss: model_loss.detach(),
                CRITIC.value_clip_frac: value_clip_frac,
                CRITIC.explained_variance: losses.explained_variance(v, r),
                CRITIC.value_mean: v.mean(-1), CRITIC.value_std: v.std(-1),
                CRITIC.return_mean: r.mean(-1), CRITIC.return_std: r.std(-1),
                CRITIC.error_mean: error.mean(-1), CRITIC.error_std: error.std(-1)}
    return total, logs


def _clip_flag(hp: MemberHyperparams) -> bool | torch.Tensor:
    """A plain bool when all members agree (the common case), else the per-member mask."""
    if hp.uniform("clip_critic_loss"):
        return bool(hp.clip_critic_loss[0])
    return hp.clip_critic_loss.unsqueeze(1)


def _as_tensor_of(knob: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A per-member column as [P] to scale a [P] value; a float as it is."""
    return knob.to(like.dtype).reshape(-1) if torch.is_tensor(knob) else knob


def _per_member(loss: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A model's auxiliary loss as [P] (models without one return a scalar zero)."""
    return loss.expand_as(like) if loss.dim() == 0 else loss
