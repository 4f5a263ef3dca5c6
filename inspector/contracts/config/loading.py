"""Loading a station file: YAML, environment overrides (``INSPECTOR_SECTION__KEY``), errors that name the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from inspector.contracts.config.base import shown_value
from inspector.contracts.config.station import StationConfig
from inspector.contracts.errors import ConfigError

ENV_PREFIX = "INSPECTOR_"
# Variables under ENV_PREFIX that are not station keys (read by tests, the trainer and the CLI). Every other
# INSPECTOR_* variable must name a key (``__`` between levels), or every process refuses to start.
NON_CONFIG_ENV = frozenset(
    {
        "INSPECTOR_SLOW",
        "INSPECTOR_SHARED_DATA",
        "INSPECTOR_WEIGHTS_DIR",
        "INSPECTOR_ROLE",
        "INSPECTOR_FAULTS_EXTERNAL",
        "INSPECTOR_EXPERIMENT_LOG",
        "INSPECTOR_SOAK_S",
        "INSPECTOR_AUDIT_KEY",
        "INSPECTOR_TOKEN",
        "INSPECTOR_TOKEN_FILE",
    }
)


def _check_env_key(key: str, path: list[str]) -> None:
    """Refuse an INSPECTOR_* variable that names no station key (a typo would be ignored without a word)."""
    model: type[BaseModel] | None = StationConfig
    for depth, part in enumerate(path):
        if model is None:
            return  # below a leaf or a mapping (e.g. jobs.recall_floors): pydantic checks the rest
        field = model.model_fields.get(part)
        if field is None:
            where = ".".join(path[:depth]) or "the station config"
            known = ", ".join(model.model_fields)
            raise ConfigError(
                f"environment variable {key} matches no station key ({part!r} is not a key of {where})",
                f"keys there: {known}; write {ENV_PREFIX}SECTION__KEY with two underscores between levels, "
                f"or unset {key}",
            )
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is not None:
        raise ConfigError(
            f"environment variable {key} names the section {'.'.join(path)}, not a key",
            f"name one key, e.g. {key}__{next(iter(model.model_fields)).upper()}",
        )


def _single_underscore_hint(key: str) -> str:
    rest = key[len(ENV_PREFIX) :].lower()
    for section in StationConfig.model_fields:
        if rest.startswith(section + "_") and rest[len(section) + 1 :]:
            return (
                f"did you mean {ENV_PREFIX}{section.upper()}__{rest[len(section) + 1 :].upper()}? Levels are "
                f"separated by two underscores; or unset {key}"
            )
    return f"write {ENV_PREFIX}SECTION__KEY (two underscores between levels), or unset {key}"


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in NON_CONFIG_ENV:
            continue
        if "__" not in key:
            raise ConfigError(f"environment variable {key} matches no station key", _single_underscore_hint(key))
        path = key[len(ENV_PREFIX) :].lower().split("__")
        _check_env_key(key, path)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another override", "remove one of them")
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
        else:
            lines.append(
                f"{path}: {e['msg'].removeprefix('Value error, ')} (got {shown_value(path, e.get('input'))!r})"
            )
    first = err.errors()[0]
    hint = (
        "remove or rename the key; `inspector validate-config --schema` lists every key with its description"
        if first["type"] == "extra_forbidden"
        else "fix the value; `inspector validate-config --schema` lists every key with its bounds"
    )
    return ConfigError(f"invalid station config ({source}): " + "; ".join(lines), hint)


def parse_config(
    data: dict[str, Any] | None, source: str = "<dict>", environ: dict[str, str] | None = None
) -> StationConfig:
    """Validate a config mapping (plus environment overrides) into a StationConfig."""
    merged = _merge(data or {}, _env_overrides(dict(os.environ) if environ is None else environ))
    try:
        return StationConfig.model_validate(merged)
    except ValidationError as err:
        raise _explain(err, source) from None


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> StationConfig:
    """Load a station YAML file (or only defaults and the environment when ``path`` is None)."""
    if path is None:
        return parse_config({}, "defaults", environ)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file {p} does not exist", "pass the path of a station YAML, e.g. configs/station.yaml"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {p} is not UTF-8 text (byte {err.start}: {err.reason})",
            "save the station file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
        ) from None
    except OSError as err:
        raise ConfigError(
            f"config file {p} cannot be read: {err.strerror}", "check the path and that this user may read it"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"config file {p} is not valid YAML{at}: {problem}", "check indentation and quoting"
        ) from None
    if data is None:
        raise ConfigError(
            f"config file {p} is empty (no keys)", "write at least `station: {id: <station id>}`; configs/ has examples"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at top level", "start the file with `station:`")
    return parse_config(data, str(p), environ)


def schema_table() -> list[tuple[str, str, str]]:
    """(key path, default, description) for every leaf key: the reference users read."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            key = f"{prefix}{name}"
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, key + ".")
            else:
                default = field.get_default(call_default_factory=True)
                rows.append((key, repr(default), field.description or ""))

    walk(StationConfig, "")
    return rows
