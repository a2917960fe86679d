"""Sweeps and runs into DataFrames, plots (matplotlib Figures) and reports.

    from workbench.analysis import load_study, join_histories, plot_learning_curves
    trials = load_study("sweeps_db/smoke.journal", "smoke")
    histories = join_histories(trials)
    plot_learning_curves(trials, histories)

See docs/analysis.md.
"""
from .errors import AnalysisError, RunNotFoundError, StorageNotFoundError, StudyNotFoundError
from .figures import figure_png
from .histories import Histories, join_histories, long_history
from .html_report import HtmlReport, default_report_path, write_html_report
from .importance import param_importances
from .pareto import is_multi_objective, pareto_front, plot_pareto_front
from .latest import env_default, latest_run, latest_study, resolve_study
from .reeval import reevaluation_table, reevaluation_verdict
from .run_plots import RUN_PANELS, load_run, plot_grad_layers, plot_metrics, plot_run_section, run_summary
from .study import best_and_worst, list_studies, load_study, open_study, param_columns
from .sweep_plots import (plot_learning_curves, plot_objective_vs_params, plot_parallel_coordinates,
                          plot_param_importances, plot_pruning_efficiency, plot_training_diagnostics,
                          pruning_efficiency, trial_frames)
from .wandb_report import build_wandb_report, runs_were_online

__all__ = [
    "AnalysisError", "Histories", "HtmlReport", "RUN_PANELS", "RunNotFoundError", "StorageNotFoundError",
    "StudyNotFoundError", "best_and_worst", "build_wandb_report", "default_report_path", "env_default",
    "figure_png", "is_multi_objective", "join_histories", "latest_run", "latest_study", "list_studies", "load_run", "load_study",
    "long_history", "open_study", "param_columns", "param_importances", "pareto_front", "plot_grad_layers",
    "plot_learning_curves", "plot_metrics", "plot_objective_vs_params", "plot_parallel_coordinates",
    "plot_pareto_front",
    "plot_param_importances", "plot_pruning_efficiency", "plot_run_section", "plot_training_diagnostics",
    "pruning_efficiency", "reevaluation_table", "reevaluation_verdict", "resolve_study", "run_summary", "runs_were_online", "trial_frames",
    "write_html_report",
]
