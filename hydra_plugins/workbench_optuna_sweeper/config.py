"""The sweeper's config schema, registered as ``hydra/sweeper: workbench_optuna`` and, for
files written for hydra-optuna-sweeper, as ``hydra/sweeper: optuna`` (with its sampler group
``hydra/sweeper/sampler: tpe|random|cmaes|nsgaii|qmc`` and its default direction, minimize)."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

# The nested nodes are the settings classes the sweep code reads, declared once there.
from workbench.sweep.heartbeat import HeartbeatSettings
from workbench.sweep.objective import ObjectiveSettings
from workbench.sweep.reevaluate import ReevalSettings


@dataclass
class WorkbenchOptunaSweeperConf:
    _target_: str = "hydra_plugins.workbench_optuna_sweeper.sweeper.WorkbenchOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds sampler/pruner itself, with clear errors
    # `_target_` configs, replaced whole by a sweep file (a dict default would be merged key
    # by key with the file's). null sampler: TPESampler(multivariate=True, group=True,
    # constant_liar=True); null pruner: NopPruner.
    sampler: Optional[Any] = None
    pruner: Optional[Any] = None
    direction: Any = "maximize"  # or a list, [maximize, minimize]: a multi-objective study
    study_name: Optional[str] = None  # default: the sweep file's name (`+sweep=<name>`)
    # journal file path or Optuna RDB URL; default $WORKBENCH_SWEEP_STORAGE, else
    # <original cwd>/<storage_dir>/<study_name>.journal
    storage: Optional[str] = None
    storage_dir: str = "sweeps_db"
    n_trials: int = 20  # total over all workers and restarts
    n_jobs: int = 1  # concurrent jobs of this sweeper (needs an out-of-process launcher)
    # > 1: each job trains this many trials side by side as one batched population and refills
    # a pruned or finished trial's slot with the next trial (workbench/sweep/population_trials.py)
    population: int = 1
    params: Dict[str, Any] = field(default_factory=dict)
    conditions: Dict[str, str] = field(default_factory=dict)
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    wait_for_running: bool = True  # at the end, wait for (and reap) other workers' trials
    # dotted path of a function(cfg) that raises on an invalid job config (e.g.
    # workbench.config.validate): applied before any trial to jobs at the search space's ends and every choice
    validate: Optional[str] = None
    # a worker's start-up, done before it asks its first trial so that it stays out of trial
    # durations: "module" (imported) or "module:function" (imported, then called with a job's
    # composed config). The default imports torch and tensordict and starts the W&B service.
    preload: List[str] = field(default_factory=lambda: ["workbench.train:warm_up"])
    # a new study first runs the untuned defaults, user_attrs["baseline"] = True (workbench/sweep/baseline.py)
    baseline: bool = True
    reevaluate: ReevalSettings = field(default_factory=ReevalSettings)
    reevaluate_only: bool = False  # open the study and re-evaluate it now (`workbench reevaluate`)
    dry_run: bool = False  # validate the sweep and create the study, run nothing
    print_summary: bool = True  # the summary table at the end (`workbench sweep` prints it once)
    summary_csv: bool = True


@dataclass
class OptunaCompatSweeperConf(WorkbenchOptunaSweeperConf):
    """``hydra/sweeper: optuna``: what a hydra-optuna-sweeper file expects. Its sampler comes
    from the sampler group (so ``sampler: {seed: 123}`` fills in the TPE sampler) and a file
    that names no direction minimises, as there."""

    # _self_ first: its `sampler: None` must not overwrite the group's sampler
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}])
    direction: Any = "minimize"


# hydra-optuna-sweeper's sampler group; TPE keeps the workbench's defaults (see docs/sweeps.md)
SAMPLERS = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "multivariate": True, "group": True,
            "constant_liar": True, "seed": None},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None},
    "nsgaii": {"_target_": "optuna.samplers.NSGAIISampler", "seed": None},
    "qmc": {"_target_": "optuna.samplers.QMCSampler", "seed": None},
}

_store = ConfigStore.instance()
for _name, _node in (("workbench_optuna", WorkbenchOptunaSweeperConf), ("optuna", OptunaCompatSweeperConf)):
    _store.store(group="hydra/sweeper", name=_name, node=_node, provider="workbench_optuna_sweeper")
for _name, _node in SAMPLERS.items():
    _store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="workbench_optuna_sweeper")
