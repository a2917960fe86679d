"""Adam (and AdamW) over a population's flat parameters, with a step mask and per-member LRs.

A member whose update is skipped this minibatch (clip-fraction skip, bad gradients, an empty
slot) keeps its parameters, moments and step count exactly: the masked members' rows are not
touched. Each member has its own learning rate (a sweep knob, and the adaptive-LR state).

The formulas are torch.optim.Adam's (``lerp`` of the first moment, bias corrections from the
member's own step count, ``eps`` outside the square root). A member's state is read and
written in torch.optim.Adam's ``state_dict`` format, so single-run checkpoints load unchanged.
"""
from __future__ import annotations

import math

import torch

from workbench.agents.common.flat_params import FlatParameters

ADAM_TARGETS = ("torch.optim.Adam", "torch.optim.AdamW")


class MemberAdam:
    def __init__(self, flat: FlatParameters, lr: torch.Tensor, *, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False, param_index: list[int] | None = None,
                 target: str = "torch.optim.Adam"):
        self.flat = flat
        P = flat.num_members
        device = flat.data.device
        self.lr = lr.to(device=device, dtype=torch.float64).clone()  # [P]
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.decoupled = decoupled
        self.target = target
        # positions of the flat parameters in the module's parameters() (frozen ones have none)
        self.param_index = param_index if param_index is not None else list(range(len(flat.params)))
        self.exp_avg = torch.zeros_like(flat.data)
        self.exp_avg_sq = torch.zeros_like(flat.data)
        self.steps = [0] * P  # each member's own step count (bias corrections)

    @torch.no_grad()
    def step(self, mask: torch.Tensor) -> None:
        """One Adam step for the members where ``mask`` ([P] bool) is true."""
        chosen = mask.tolist()
        if not self.flat.params or not any(chosen):
            return
        everyone = all(chosen)
        self.steps = [s + 1 if c else s for s, c in zip(self.steps, chosen)]
        param, grad = self.flat.data, self.flat.grad
        b1, b2 = self.beta1, self.beta2
        rows = mask.unsqueeze(1)
        if not everyone:  # a skipped member's gradient may be NaN: it must not reach its moments
            grad = grad.masked_fill(~rows, 0.0)
        if self.weight_decay and not self.decoupled:
            grad = grad.add(param, alpha=self.weight_decay)
        if everyone:
            self.exp_avg.lerp_(grad, 1 - b1)
            self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        else:
            keep1 = torch.where(rows, b1, 1.0).to(param.dtype)
            keep2 = torch.where(rows, b2, 1.0).to(param.dtype)
            self.exp_avg.lerp_(grad, 1 - keep1)
            self.exp_avg_sq.mul_(keep2).addcmul_(grad, grad * (1 - keep2))
        # bias corrections from each member's own step count, in float64 as torch's Adam does
        lrs = self.lr.tolist()
        step_sizes = [lr / (1 - b1 ** max(s, 1)) if c else 0.0 for lr, s, c in zip(lrs, self.steps, chosen)]
        bias2_sqrt = [math.sqrt(1 - b2 ** max(s, 1)) for s in self.steps]
        if self.weight_decay and self.decoupled:
            decay = [1 - lr * self.weight_decay if c else 1.0 for lr, c in zip(lrs, chosen)]
            param.mul_(self._column(decay) if len(set(decay)) > 1 else decay[0])
        if everyone and len(set(step_sizes)) == 1 and len(set(bias2_sqrt)) == 1:
            # the common case (one member, or members in step with one LR): scalars, no [P, 1] columns
            denom = self.exp_avg_sq.sqrt().div_(bias2_sqrt[0]).add_(self.eps)
            param.sub_((self.exp_avg * step_sizes[0]).div_(denom))  # torch's order: (step_size * m) / denom
            return
        denom = self.exp_avg_sq.sqrt().div_(self._column(bias2_sqrt)).add_(self.eps)
        update = (self.exp_avg * self._column(step_sizes)).div_(denom)
        param.sub_(update if everyone else update.masked_fill_(~rows, 0.0))

    def _column(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=self.flat.data.dtype, device=self.flat.data.device).unsqueeze(1)

    # ------------------------------------------------------------------ one member's state
    def reset_member(self, member: int, lr: float) -> None:
        self.exp_avg[member].zero_()
        self.exp_avg_sq[member].zero_()
        self.steps[member] = 0
        self.lr[member] = lr

    def member_state_dict(self, member: int, num_module_params: int) -> dict:
        """Member ``member``'s state as torch.optim.Adam.state_dict() of its single network."""
        state = {}
        offset = 0
        steps = float(self.steps[member])
        for index, size, shape in zip(self.param_index, self.flat.sizes, self.flat.member_shapes):
            if steps > 0:
                state[index] = {"step": torch.tensor(steps),
                                "exp_avg": self.exp_avg[member, offset:offset + size].reshape(shape).cpu().clone(),
                                "exp_avg_sq": self.exp_avg_sq[member, offset:offset + size].reshape(shape).cpu().clone()}
            offset += size
        group = {"lr": float(self.lr[member]), "betas": (self.beta1, self.beta2), "eps": self.eps,
                 "weight_decay": self.weight_decay, "amsgrad": False, "maximize": False, "foreach": None,
                 "capturable": False, "differentiable": False, "fused": True, "decoupled_weight_decay": self.decoupled,
                 "params": list(range(num_module_params))}
        return {"state": state, "param_groups": [group]}

    @torch.no_grad()
    def load_member_state_dict(self, member: int, state_dict: dict) -> None:
        state = state_dict["state"]
        groups = state_dict["param_groups"]
        if len(groups) != 1:
            raise ValueError(f"expected one optimizer param group, got {len(groups)}")
        self.lr[member] = float(groups[0]["lr"])
        offset = 0
        steps = 0.0
        for index, size in zip(self.param_index, self.flat.sizes):
            entry = state.get(index, state.get(str(index)))
            if entry is None:
                self.exp_avg[member, offset:offset + size].zero_()
                self.exp_avg_sq[member, offset:offset + size].zero_()
            else:
                self.exp_avg[member, offset:offset + size].copy_(entry["exp_avg"].reshape(-1))
                self.exp_avg_sq[member, offset:offset + size].copy_(entry["exp_avg_sq"].reshape(-1))
                steps = float(entry["step"])
            offset += size
        self.steps[member] = int(steps)


def adam_kwargs(config) -> dict:
    """MemberAdam's keyword arguments from an OptimizerConfig (refuses what it cannot honour)."""
    target = config._target_
    if target not in ADAM_TARGETS:
        raise ValueError(f"optimizer {target!r} is not supported; allowed: {', '.join(ADAM_TARGETS)}")
    decoupled = target == "torch.optim.AdamW"
    return {"betas": tuple(config.betas), "eps": config.eps, "weight_decay": config.weight_decay,
            "decoupled": decoupled, "target": target}
