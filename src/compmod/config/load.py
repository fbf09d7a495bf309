"""Build a typed `Config` from YAML files and dotted `--set a.b=c` overrides, with loud errors."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from compmod.config.augment import AugmentConfig
from compmod.config.augment_presets import augment_preset  # importing fills the registries
from compmod.config.schema import Config, MethodConfig
from compmod.config.validate import validate
from compmod.config.yaml_loader import DuplicateKeyError, load_yaml
from compmod.errors import ConfigError, did_you_mean
from compmod.methods import METHODS


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """defaults <- method's augmentation preset <- YAML file at `path` <- `overrides` ("a.b=value")."""
    raw: dict[str, Any] = read_yaml(path) if path is not None else {}
    for item in overrides or []:
        apply_override(raw, item)
    return config_from_dict(raw)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start} "
            "cannot be decoded; save it as UTF-8"
        ) from None
    try:
        data = load_yaml(text)
    except DuplicateKeyError as e:
        raise ConfigError(f"config file {str(p)!r}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(p)!r} must hold a mapping of sections, got {type(data).__name__}"
        )
    return data


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `raw[a][b] = value` for "a.b=value"; the value is parsed as YAML (1e-3, true, [a, b], null)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = load_yaml(text) if text.strip() else None
    except DuplicateKeyError as e:
        raise ConfigError(f"override {item!r}: {e}") from None
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: dict[str, Any]) -> Config:
    raw = copy.deepcopy(raw)
    method_raw = _section(raw, "method")
    name = method_raw.pop("name", MethodConfig.name)
    if not isinstance(name, str):
        raise ConfigError(f"config key method.name: expected a string, got {name!r}")
    spec = METHODS.get(name)
    params = _build(spec.params, method_raw, "method")

    augment_raw = _section(raw, "augment")
    preset = augment_raw.get("preset", AugmentConfig.preset)
    if preset == "auto":
        preset = spec.augment_preset
    augment_raw = _deep_merge(augment_preset(preset), augment_raw)
    augment_raw["preset"] = preset

    raw["method"] = {}
    raw["augment"] = augment_raw
    cfg = _build(Config, raw, "")
    cfg.method = MethodConfig(name=name, params=params)
    validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (YAML-ready) that `config_from_dict` turns back into the same config."""
    out = dataclasses.asdict(dataclasses.replace(cfg, method=MethodConfig()))
    out["method"] = {"name": cfg.method.name, **dataclasses.asdict(cfg.method.params)}
    return _plain(out)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key {name}: expected a section (mapping), got {value!r}")
    return value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build(cls: type, data: Any, path: str) -> Any:
    """Construct dataclass `cls` from `data`, checking every key and value against its annotations."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key {path}: expected a section (mapping), got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            full = _join(path, str(key))
            valid = [_join(path, k) for k in fields]
            raise ConfigError(
                f"unknown config key {full}{did_you_mean(full, valid)}; "
                f"valid keys{' under ' + path if path else ''}: {', '.join(fields)}"
            )
    kwargs = {k: _convert(hints[k], v, _join(path, k)) for k, v in data.items()}
    return cls(**kwargs)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        return _union(tp, args, value, path)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"config key {path}: {value!r} is not accepted{did_you_mean(str(value), map(str, args))}; "
                f"choose one of: {', '.join(map(str, args))}"
            )
        return value
    if tp in (bool, int, float, str):
        return _scalar(tp, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(
                f"config key {path}: expected a list of {len(args)} values, got {_describe(value)}"
            )
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:  # a mapping passed on as it is (e.g. a library's keyword arguments)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(
                f"config key {path}: expected a mapping of names to values, got {_describe(value)}"
            )
        return {k: _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {path}: expected a list, got {_describe(value)}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"config key {path}: unsupported annotation {tp!r}")  # a bug in the schema


def _union(tp: Any, args: tuple[Any, ...], value: Any, path: str) -> Any:
    """`value` as the first member of the union `tp` that accepts it (None for an optional None)."""
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    errors = []
    for a in options:
        try:
            return _convert(a, value, path)
        except ConfigError as e:
            errors.append(e)
    if len(options) == 1:
        raise errors[0]
    raise ConfigError(f"config key {path}: {_describe(value)} is not accepted; expected {tp}")


def _scalar(tp: type, value: Any, path: str) -> Any:
    """`value` as a bool, int, float (also from a YAML 1.1 string such as "1e-3") or str."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {path}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {path}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; accept any float literal
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key {path}: expected a number, got {_describe(value)}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"config key {path}: expected a string, got {_describe(value)}")
    return value
