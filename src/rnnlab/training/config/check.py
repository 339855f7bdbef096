"""The option table as a whole, and checking a config against it: unknown sections, keys and bad
values are errors naming the key, what was expected and what was given."""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Mapping
from typing import Any

from .model_options import MODEL_OPTIONS
from .option import ConfigError, Option
from .run_options import RUN_OPTIONS

OPTIONS: tuple[Option, ...] = MODEL_OPTIONS + RUN_OPTIONS
SECTIONS = tuple(dict.fromkeys(o.section for o in OPTIONS))
BY_NAME = {o.name: o for o in OPTIONS}
# keys that may change when a run is resumed (the rest must match the saved config)
RESUMABLE = {
    "train.steps",
    "train.eval_every",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep",
    "train.patience",
    "train.min_delta",
    "train.divergence_factor",
    "train.device",
    "train.progress",
    "train.grad_monitor_every",
    "train.plots",
}


def default_config() -> dict[str, dict[str, Any]]:
    """Every option at its default, by section."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for o in OPTIONS:
        out[o.section][o.key] = copy.deepcopy(o.default)
    return out


def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_value(o: Option, value: Any) -> Any:
    """``value`` checked against option ``o`` (ints accepted for floats)."""
    if value is None:
        if o.nullable:
            return None
        raise ConfigError(f"{o.name}: expected a value ({o.kind}), got null")
    if o.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{o.name}: expected true or false, got {value!r}")
        return value
    if o.kind == "dict":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{o.name}: expected a mapping of names to values, got {value!r}")
        return dict(value)
    if o.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{o.name}: expected an int, got {value!r}")
    if o.kind == "float":
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string; a number written as text is a number
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(
                    f"{o.name}: expected a number, got the string {value!r} (write numbers "
                    "like 0.001 or 1.0e-3)"
                ) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{o.name}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{o.name}: expected a finite number, got {value!r}")
    if o.kind == "str" and not isinstance(value, str):
        raise ConfigError(f"{o.name}: expected a string, got {value!r}")
    if o.choices is not None and (value not in o.choices or isinstance(value, bool)):
        raise ConfigError(
            f"{o.name}: expected one of {list(o.choices)}, got {value!r}"
            + _suggest(value, o.choices)
        )
    if o.low is not None and value < o.low:
        raise ConfigError(f"{o.name}: expected a value >= {o.low:g}, got {value!r}")
    return value


def check_config(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Defaults merged with ``config``; unknown sections, keys and bad values are errors."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a mapping of sections, got {type(config).__name__}")
    out = default_config()
    for section, values in config.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{section}: unknown config section; expected one of {list(SECTIONS)}"
                + _suggest(section, SECTIONS)
            )
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section}: expected a mapping of keys, got {type(values).__name__}")
        for key, value in values.items():
            name = f"{section}.{key}"
            if name not in BY_NAME:
                keys = [o.key for o in OPTIONS if o.section == section]
                raise ConfigError(
                    f"{name}: unknown config key; expected one of {keys}" + _suggest(key, keys)
                )
            out[section][key] = check_value(BY_NAME[name], value)
    return out


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file (``yaml.safe_load``: no code runs)."""
    import yaml

    if os.path.isdir(path):
        raise ConfigError(f"config: expected a YAML file, got {str(path)!r}, which is a directory")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config: expected a YAML file, got {str(path)!r} (no such file)")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"config: {str(path)!r} is not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config: expected a mapping of sections in {str(path)!r}, got {type(data).__name__}"
        )
    return dict(data)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Section-wise merge (override wins)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def diff(saved: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Option names whose values differ between two checked configs."""
    out = []
    for o in OPTIONS:
        # a key missing from a config saved by an older version had its default
        if saved.get(o.section, {}).get(o.key, o.default) != given.get(o.section, {}).get(
            o.key, o.default
        ):
            out.append(o.name)
    return out
