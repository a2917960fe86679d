"""Hydra sweeper ``hydra/sweeper=workbench_optuna``: Optuna (>= 4) studies with pruning,
conditional parameters, shared storages and asynchronous workers. See docs/sweeps.md."""
