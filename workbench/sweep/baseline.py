"""The defaults as trial 0: every new study first runs the untuned configuration.

The baseline trial is enqueued with each searched parameter at the value the composed config
already has (conditions evaluated on those values, as a trial would) and the user attribute
``baseline: true``, so every result is compared with what the user already had.

Out-of-distribution defaults (a number outside its interval, a value not among the choices):
Optuna would take an out-of-range number as a fixed parameter (a warning, then the value is
stored outside its distribution) and refuses a categorical value that is not a choice
(``ValueError``). So such a default is left out of the trial's params: the baseline job gets no
override for it (it runs the config's own value) and ``user_attrs["baseline_outside"]`` lists it.
"""
from __future__ import annotations

from typing import Any, Mapping

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution

from workbench.sweep.space import SearchSpace
from workbench.sweep.storage import StorageSpec, budget_lock

BASELINE_ATTR = "baseline"
ENQUEUED_ATTR = "baseline_enqueued"  # study attr: set once, so a resumed study never enqueues again


def config_default(composed: DictConfig, name: str) -> Any:
    """The value a job without an override for ``name`` gets (a config key or a group's choice)."""
    choices = OmegaConf.select(composed, "hydra.runtime.choices", default=None) or {}
    if name in choices:
        return choices[name]
    value = OmegaConf.select(composed, name, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def contains(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return any(value == c and type(value) is type(c) for c in dist.choices)
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (TypeError, ValueError):
        return False


def baseline_params(space: SearchSpace, composed: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params to enqueue, active defaults outside their distribution)."""
    defaults: dict[str, Any] = {}
    for spec in space.searched:  # file order: a condition sees only the defaults before it
        if all(c.holds(defaults) for c in spec.condition):
            defaults[spec.name] = config_default(composed, spec.name)
    inside = {k: v for k, v in defaults.items() if contains(_dist(space, k), v)}
    outside = {k: v for k, v in defaults.items() if k not in inside}
    return inside, outside


def _dist(space: SearchSpace, name: str) -> BaseDistribution:
    return next(p.distribution for p in space.searched if p.name == name)


def enqueue_baseline(study: optuna.Study, spec: StorageSpec, space: SearchSpace, composed: DictConfig) -> bool:
    """Enqueue the baseline trial if the study is new; exactly once whatever the number of
    workers (under the budget lock). Returns whether this call enqueued it."""
    params, outside = baseline_params(space, composed)
    with budget_lock(spec, study.study_name):
        if study.user_attrs.get(ENQUEUED_ATTR) or study.get_trials(deepcopy=False):
            return False  # resumed (or older) study: its trial 0 is long decided
        attrs: dict[str, Any] = {BASELINE_ATTR: True}
        if outside:
            attrs["baseline_outside"] = {k: _plain(v) for k, v in outside.items()}
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
        study.set_user_attr(ENQUEUED_ATTR, True)
    return True


def is_baseline(trial: Any) -> bool:
    return bool(trial.user_attrs.get(BASELINE_ATTR))


def fixed_params(study: optuna.Study, trial: optuna.Trial) -> Mapping[str, Any]:
    """The params an enqueued trial was given (Optuna keeps them in a system attribute)."""
    return study._storage.get_trial(trial._trial_id).system_attrs.get("fixed_params", {})


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
