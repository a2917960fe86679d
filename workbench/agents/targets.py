"""ProtoMotions' ``_target_`` paths and the workbench classes they name: the one table.

An agent config written for ProtoMotions names its classes by ProtoMotions' import paths
(``protomotions.agents.common.mlp.MLPWithConcat``, ...). Each such path is accepted wherever
the workbench class it maps to is, so the config ports unchanged; the config check
(``workbench.config.validate``) and the module builder (``workbench.agents.common.modules``)
both read this table, nothing else names ProtoMotions paths.

ProtoMotions' module-operation configs carry no ``_target_`` (its code tells them apart by
their class); in a YAML file the natural way to name one is the config class's own path, as
Hydra's ``instantiate`` would build it, so those paths are the ones listed for the operations.
``torch.optim.Adam``/``AdamW`` are the same path in both. Not in the table, so refused with the
allowed list: ProtoMotions classes the workbench does not have (``MuonWithAuxAdam``, the mimic
evaluator, transformers, AMP/ASE models).
"""
from __future__ import annotations

from workbench.agents.common.config import MODULES

_PM_COMMON = "protomotions.agents.common"

PPO_AGENT = "workbench.agents.ppo.agent.PPO"
PPO_MODEL = "workbench.agents.ppo.model.PPOModel"
PPO_ACTOR = "workbench.agents.ppo.model.PPOActor"
EVALUATOR = "workbench.agents.common.evaluator.Evaluator"

WORKBENCH_FOR_PROTOMOTIONS: dict[str, str] = {
    "protomotions.agents.ppo.agent.PPO": PPO_AGENT,
    "protomotions.agents.ppo.model.PPOModel": PPO_MODEL,
    "protomotions.agents.ppo.model.PPOActor": PPO_ACTOR,
    "protomotions.agents.evaluators.base_evaluator.BaseEvaluator": EVALUATOR,
    f"{_PM_COMMON}.mlp.MLPWithConcat": f"{MODULES}.MLPWithConcat",
    f"{_PM_COMMON}.common.ModuleContainer": f"{MODULES}.ModuleContainer",
    f"{_PM_COMMON}.common.ObsProcessor": f"{MODULES}.ObsProcessor",
    **{f"{_PM_COMMON}.config.ModuleOperation{op}Config": f"{MODULES}.{op}"
       for op in ("Forward", "Permute", "Reshape", "Squeeze", "Unsqueeze", "Expand", "SphereProjection")},
}


def canonical_target(path: str) -> str:
    """The workbench path for ``path`` (a ProtoMotions path, or already a workbench one)."""
    return WORKBENCH_FOR_PROTOMOTIONS.get(path, path)


def accepted_targets(workbench_path: str) -> list[str]:
    """Every ``_target_`` that names ``workbench_path``: itself, then its ProtoMotions paths."""
    return [workbench_path, *(pm for pm, wb in WORKBENCH_FOR_PROTOMOTIONS.items() if wb == workbench_path)]
