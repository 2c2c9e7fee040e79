"""The search space file: one Dimension per config key, checked against the config dataclasses on load."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from fashion_tf.config import Config
from fashion_tf.errors import UserError
from fashion_tf.fileio import read_json
from fashion_tf.sweep.stages import config_from, with_values


KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")
STEP_KINDS = ("uniform", "int")
NOT_SWEPT = ("output_dir",)  # set by the sweep for every trial


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    step: Optional[float] = None
    options: tuple = ()  # choice: the config values, as the config coerces them

    @property
    def encoded(self) -> bool:
        """Optuna's categorical values must be scalars: list or object options are stored as JSON text."""
        return any(isinstance(o, (list, dict)) for o in self.options)

    def optuna_options(self) -> list:
        return [json.dumps(o) for o in self.options] if self.encoded else list(self.options)

    def suggest(self, trial) -> Any:
        """Sample this dimension in an Optuna trial; returns the config value."""
        if self.kind in ("uniform", "log_uniform"):
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.kind == "log_uniform")
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.kind == "log_int")
        return self.to_config(trial.suggest_categorical(self.key, self.optuna_options()))

    def to_config(self, optuna_value: Any) -> Any:
        if self.kind == "choice" and self.encoded:
            return json.loads(optuna_value)
        return optuna_value

    def to_optuna(self, config_value: Any) -> Any:
        return json.dumps(config_value) if self.kind == "choice" and self.encoded else config_value

    def contains(self, config_value: Any) -> bool:
        if self.kind == "choice":
            return any(json.dumps(config_value) == json.dumps(o) for o in self.options)
        if isinstance(config_value, bool) or not isinstance(config_value, (int, float)):
            return False
        if not self.low <= config_value <= self.high:
            return False
        return self.step is None or math.isclose((config_value - self.low) / self.step,
                                                 round((config_value - self.low) / self.step), abs_tol=1e-9)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {len(self.options)}"
        return f"{self.kind} [{self.low:g}, {self.high:g}]" + (f" step {self.step:g}" if self.step else "")


def load_space(path: str | Path, base: dict) -> list[Dimension]:
    """Read and check a space file against the resolved base config dict; raises UserError naming file and key."""
    path = Path(path)
    raw = read_json(path, "space file")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: expected a non-empty object of config key -> distribution, "
                        'e.g. {"train.learning_rate": {"log_uniform": [1e-4, 1e-2]}}')
    return [_dimension(path, key, spec, base) for key, spec in raw.items()]


def _dimension(path: Path, key: str, spec: Any, base: dict) -> Dimension:
    where = f"{path} [{key}]"
    if key in NOT_SWEPT:
        raise UserError(f"{where}: {key} is set by the sweep (OUT/trials/trial-NNNN) and cannot be searched")
    if not isinstance(spec, dict) or not any(kind in spec for kind in KINDS):
        raise UserError(f"{where}: expected an object with one of {', '.join(KINDS)}, got {json.dumps(spec)}")
    kinds = [kind for kind in spec if kind in KINDS]
    unknown = [name for name in spec if name not in KINDS and name != "step"]
    if len(kinds) > 1 or unknown:
        raise UserError(f"{where}: give exactly one of {', '.join(KINDS)} (and an optional step), "
                        f"got {', '.join(map(repr, spec))}")
    kind, values = kinds[0], spec[kinds[0]]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}: choice needs a non-empty list of values, got {json.dumps(values)}")
        if "step" in spec:
            raise UserError(f"{where}: step applies to uniform and int only")
        options = tuple(_config_value(base, key, value, where) for value in values)
        if len({json.dumps(o) for o in options}) != len(options):
            raise UserError(f"{where}: choice lists a value twice")
        return Dimension(key, kind, options=options)
    low, high, step = _range(where, kind, values, spec.get("step"))
    for end in (low, high):  # a float end where the field wants integers (or the reverse) fails here
        _config_value(base, key, int(end) if kind in ("int", "log_int") else float(end), where)
    return Dimension(key, kind, low, high, step)


def _range(where: str, kind: str, values: Any, step: Any) -> tuple[float, float, Optional[float]]:
    integral = kind in ("int", "log_int")
    number = int if integral else (int, float)
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, number) and not isinstance(v, bool) for v in values)):
        raise UserError(f"{where}: {kind} needs [low, high] as two {'integers' if integral else 'numbers'}, "
                        f"got {json.dumps(values)}")
    low, high = values
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{where}: {kind} bounds must be finite, got {json.dumps(values)}")
    if low >= high:
        raise UserError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
    if kind.startswith("log_") and low <= 0:
        raise UserError(f"{where}: {kind} needs low > 0 (a log scale), got [{low}, {high}]")
    if step is not None:
        if kind not in STEP_KINDS:
            raise UserError(f"{where}: step applies to uniform and int only, not {kind}")
        if not isinstance(step, number) or isinstance(step, bool) or step <= 0 or step > high - low:
            raise UserError(f"{where}: step must be a positive {'integer' if integral else 'number'} "
                            f"no larger than high - low, got {json.dumps(step)}")
    return low, high, step


def _config_value(base: dict, key: str, value: Any, where: str) -> Any:
    """The value as the config takes it (ints widen to float, etc.), after checking base + {key: value} loads."""
    config = config_from(with_values(base, {key: value}, where), where)
    node = _config_node(config, key)
    if dataclasses.is_dataclass(node):
        raise UserError(f"{where}: names a config section; search one of its keys (e.g. {key}.<key>)")
    return node


def _config_node(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part)
    return node


def base_values(dimensions: Sequence[Dimension], config: Config) -> tuple[Optional[dict], str]:
    """(Optuna params of the base config, "") when the space contains every base value, else (None, why not)."""
    params = {}
    for dim in dimensions:
        try:
            value = _config_node(config, dim.key)
        except (AttributeError, KeyError):
            return None, f"the base config has no {dim.key}"
        if not dim.contains(value):
            return None, f"its {dim.key} ({json.dumps(value)}) is outside the space ({dim.describe()})"
        params[dim.key] = dim.to_optuna(value)
    return params, ""


def config_params(dimensions: Sequence[Dimension], optuna_params: dict) -> dict:
    """Optuna's stored params of a trial -> {config key: config value}."""
    return {dim.key: dim.to_config(optuna_params[dim.key]) for dim in dimensions if dim.key in optuna_params}
