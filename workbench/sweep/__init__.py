"""Optuna sweeps over Hydra configs: search spaces, the study driver, trial execution.

The Hydra sweeper plugin (``hydra_plugins.workbench_optuna_sweeper``) is thin glue over
this package; everything here is usable without Hydra's sweeper machinery.
"""
from workbench.sweep.errors import SweepConfigError

__all__ = ["SweepConfigError"]
