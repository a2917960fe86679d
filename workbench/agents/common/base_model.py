"""The base TensorDict model every agent model derives from (``BaseModelConfig._target_``)."""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase


class BaseModel(TensorDictModuleBase):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.in_keys = list(config.in_keys)
        self.out_keys = list(config.out_keys)

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        return td

    def compute_model_loss(self, td: TensorDictBase) -> torch.Tensor:
        """Auxiliary loss of the sub-modules, added to both the actor and the critic loss; MLPs have none."""
        return next(iter(td.values())).new_zeros(())
