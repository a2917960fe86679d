"""Search spaces written in Hydra's sweep grammar, sampled define-by-run.

The grammar is the one hydra-optuna-sweeper users already write in ``hydra.sweeper.params``,
so their files port unchanged:

    interval(a, b)            float uniform in [a, b]; int uniform if a and b are both ints
    tag(log, interval(a, b))  the same on a log scale
    tag(int, interval(a, b))  integers in [a, b] (tags combine: tag(log, int, interval(1, 64)))
    range(a, b[, step])       stepped values from a to b, b included (as hydra-optuna-sweeper;
                              Hydra's own basic sweeper excludes b); float if any bound is float
    choice(x, y, ...) / x,y   categorical
    shuffle(...)              categorical over the listed values
    anything else             a fixed value, passed to every trial unchanged

Conditions (``hydra.sweeper.conditions``) map a parameter to an expression over parameters
listed before it: ``"<param> == <value>"``, ``"<param> != <value>"``,
``"<param> in [v1, v2]"``, joined with ``and``. A parameter whose condition is false is not
sampled and not overridden (the config default applies); a condition that names a parameter
that was itself not sampled is false, so chains (enabled -> use_ema -> ema_alpha) work.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    IntervalSweep,
    Override,
    QuotedString,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException
from omegaconf import OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from workbench.sweep.errors import SweepConfigError

_CLAUSE = re.compile(r"^\s*(?P<param>[^\s=!]+)\s*(?P<op>==|!=|\bin\b)\s*(?P<value>.+?)\s*$")


@dataclass(frozen=True)
class Clause:
    """One ``param op value`` test of a condition."""

    param: str
    op: str
    value: Any

    def holds(self, sampled: Mapping[str, Any]) -> bool:
        if self.param not in sampled:  # the parameter it depends on is inactive
            return False
        actual = sampled[self.param]
        if self.op == "==":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        return actual in self.value


def parse_condition(target: str, text: str) -> tuple[Clause, ...]:
    """Parse ``"a == 1 and b != x"``; raise SweepConfigError naming ``target`` if malformed."""
    clauses = []
    for part in re.split(r"\s+and\s+", str(text).strip()):
        match = _CLAUSE.match(part)
        if not match:
            raise SweepConfigError(
                f"hydra.sweeper.conditions.{target}: cannot parse {part!r}; expected "
                "'<param> == <value>', '<param> != <value>' or '<param> in [v1, v2]' "
                "joined with 'and'"
            )
        value = yaml.safe_load(match["value"])
        if match["op"] == "in" and not isinstance(value, list):
            raise SweepConfigError(
                f"hydra.sweeper.conditions.{target}: 'in' needs a list, got {match['value']!r}"
            )
        clauses.append(Clause(match["param"], match["op"], value))
    return tuple(clauses)


@dataclass(frozen=True)
class ParamSpec:
    """One entry of ``hydra.sweeper.params``."""

    name: str  # the config key (or group) it overrides; also the Optuna parameter name
    prefix: str  # "", "+" or "++": how the override is written
    distribution: BaseDistribution | None  # None: a fixed value
    fixed: str | None = None  # the fixed value, already in override syntax
    condition: tuple[Clause, ...] = ()


@dataclass
class SearchSpace:
    params: list[ParamSpec] = field(default_factory=list)

    @property
    def searched(self) -> list[ParamSpec]:
        return [p for p in self.params if p.distribution is not None]

    def sample(self, trial: Any, only: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Suggest every active parameter on ``trial`` (define-by-run) in file order. ``only``:
        suggest just these (the baseline trial's fixed defaults; the rest keep the config's value)."""
        sampled: dict[str, Any] = {}
        for spec in self.searched:
            if only is not None and spec.name not in only:
                continue
            if only is not None or all(c.holds(sampled) for c in spec.condition):
                sampled[spec.name] = suggest(trial, spec.name, spec.distribution)
        return sampled

    def overrides(self, sampled: Mapping[str, Any]) -> list[str]:
        """Hydra overrides for one trial: sampled values plus the fixed entries."""
        out = []
        for spec in self.params:
            if spec.distribution is None:
                out.append(f"{spec.prefix}{spec.name}={spec.fixed}")
            elif spec.name in sampled:
                out.append(f"{spec.prefix}{spec.name}={format_value(sampled[spec.name])}")
        return out

    def validation_points(self) -> list[list[str]]:
        """Override lists to compose before any trial: numeric parameters at their low and
        high ends in turn, and every categorical choice at least once (a bad choice in the
        middle of a list must not wait for the trial that samples it)."""
        searched = [spec.distribution for spec in self.params if spec.distribution is not None]
        width = max([2] + [len(d.choices) for d in searched if isinstance(d, CategoricalDistribution)])
        points = []
        for k in range(width):
            overrides = []
            for spec in self.params:
                value = spec.fixed if spec.distribution is None else format_value(_point(spec.distribution, k))
                overrides.append(f"{spec.prefix}{spec.name}={value}")
            points.append(overrides)
        return points


def suggest(trial: Any, name: str, dist: BaseDistribution) -> Any:
    """Sample ``dist`` through Trial's public suggest API."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_categorical(name, dist.choices)


def _point(dist: BaseDistribution, k: int) -> Any:
    """The k-th validation value: choices cycle, numeric ends alternate low, high."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[k % len(dist.choices)]
    return dist.low if k % 2 == 0 else dist.high


def format_value(value: Any) -> str:
    """Write a Python value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value).lower()
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _distribution(override: Override) -> BaseDistribution:
    name = override.key_or_group
    value = override.value()
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        low, high, log = value.start, value.end, "log" in value.tags
        _check_bounds(name, low, high, log)
        # Hydra parses interval bounds as floats; `tag(int, ...)` asks for integers
        if "int" in value.tags or (isinstance(low, int) and isinstance(high, int)):
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if override.is_range_sweep() and not value.shuffle:
        assert isinstance(value, RangeSweep)
        low, high, step = value.start, value.stop, value.step
        if step is None or step <= 0:
            raise SweepConfigError(f"{name}: range step must be > 0, got {step}")
        _check_bounds(name, low, high, log="log" in value.tags)
        if all(isinstance(v, int) for v in (low, high, step)):
            return IntDistribution(low, high, step=step, log="log" in value.tags)
        return FloatDistribution(float(low), float(high), step=float(step))
    # choice(...), a,b,c, shuffle(...), shuffled range: categorical over the listed values
    choices = _choices(override)
    if not choices:
        raise SweepConfigError(f"{name}: empty choice")
    for c in choices:
        if not isinstance(c, (str, int, float, bool, type(None))):
            raise SweepConfigError(f"{name}: choice values must be scalars, got {c!r}")
    return CategoricalDistribution(choices)


def _choices(override: Override) -> list[Any]:
    values = override.sweep_iterator(transformer=Transformer.identity)
    # a quoted item of a plain `a,'b c'` list comes back wrapped
    return [v.text if isinstance(v, QuotedString) else v for v in values]


def _check_bounds(name: str, low: Any, high: Any, log: bool) -> None:
    if low is None or high is None:
        raise SweepConfigError(f"{name}: interval needs two bounds")
    if not low < high:
        raise SweepConfigError(f"{name}: low must be < high, got low={low}, high={high}")
    if log and low <= 0:
        raise SweepConfigError(f"{name}: a log scale needs low > 0, got {low}")


def parse_search_space(
    params: Mapping[str, Any] | None, conditions: Mapping[str, Any] | None = None
) -> SearchSpace:
    """Build a SearchSpace from ``hydra.sweeper.params`` and ``hydra.sweeper.conditions``."""
    params = _plain(params)
    conditions = _plain(conditions)
    parser = OverridesParser.create()
    space = SearchSpace()
    for key, raw in params.items():
        line = f"{key}={_as_text(raw)}"
        try:
            (override,) = parser.parse_overrides([line])
        except HydraException as exc:
            raise SweepConfigError(f"hydra.sweeper.params.{key}: cannot parse {raw!r}: {exc}")
        name = override.key_or_group
        prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
        if override.is_delete():
            raise SweepConfigError(f"hydra.sweeper.params.{key}: deletions cannot be searched")
        if override.is_sweep_override():
            spec = ParamSpec(name, prefix, _distribution(override))
        else:
            spec = ParamSpec(name, prefix, None, fixed=override.get_value_element_as_str())
        space.params.append(spec)

    by_name = {p.name: i for i, p in enumerate(space.params)}
    for target, text in conditions.items():
        if target not in by_name:
            raise SweepConfigError(
                f"hydra.sweeper.conditions.{target}: not a parameter in hydra.sweeper.params"
            )
        index = by_name[target]
        if space.params[index].distribution is None:
            raise SweepConfigError(f"hydra.sweeper.conditions.{target}: a fixed value has no condition")
        clauses = parse_condition(target, text)
        for clause in clauses:
            if clause.param not in by_name or space.params[by_name[clause.param]].distribution is None:
                raise SweepConfigError(
                    f"hydra.sweeper.conditions.{target}: {clause.param!r} is not a searched parameter"
                )
            if by_name[clause.param] >= index:
                raise SweepConfigError(
                    f"hydra.sweeper.conditions.{target}: {clause.param!r} must be listed before "
                    f"{target!r} in hydra.sweeper.params (parameters are sampled in file order)"
                )
        spec = space.params[index]
        space.params[index] = ParamSpec(spec.name, spec.prefix, spec.distribution, spec.fixed, clauses)
    return space


def _plain(node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=False)
    return dict(node)


def _as_text(raw: Any) -> str:
    # YAML may have already turned `0.2` into a float or `true` into a bool
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (list, tuple)):
        return ",".join(format_value(v) for v in raw)
    return format_value(raw)

