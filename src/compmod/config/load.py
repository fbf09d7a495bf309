"""Build a typed `Config` from YAML files and dotted `--set a.b=c` overrides, with loud errors."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from compmod.config.augment import AUGMENT_OPS, AugmentConfig
from compmod.config.schema import Config, MethodConfig
from compmod.config.yaml_loader import load_yaml
from compmod.errors import ConfigError, did_you_mean


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
        data = load_yaml(p.read_text())
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
    from compmod.data.presets import augment_preset  # registries are filled on import
    from compmod.methods import METHODS

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


def validate(cfg: Config) -> None:
    """Range checks that types alone do not express."""
    checks: list[tuple[bool, str, Any, str]] = [
        (cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, "an integer >= 1"),
        (cfg.train.batch_size >= 2, "train.batch_size", cfg.train.batch_size, "an integer >= 2"),
        (cfg.train.lr > 0, "train.lr", cfg.train.lr, "a float > 0"),
        (cfg.train.weight_decay >= 0, "train.weight_decay", cfg.train.weight_decay, "a float >= 0"),
        (cfg.train.warmup_epochs >= 0, "train.warmup_epochs", cfg.train.warmup_epochs, "a float >= 0"),
        (cfg.data.subset is None or cfg.data.subset >= 2, "data.subset", cfg.data.subset, "null or >= 2"),
        (
            cfg.data.image_size is None or cfg.data.image_size >= 8,
            "data.image_size",
            cfg.data.image_size,
            "null or an integer >= 8",
        ),
        (cfg.data.channels in (None, 1, 3), "data.channels", cfg.data.channels, "null, 1 or 3"),
        (
            0 < cfg.data.holdout_fraction < 1,
            "data.holdout_fraction",
            cfg.data.holdout_fraction,
            "a float in (0, 1)",
        ),
        (cfg.eval.knn_k >= 1, "eval.knn_k", cfg.eval.knn_k, "an integer >= 1"),
        (
            bool(cfg.eval.semi_fractions) and all(0 < f <= 1 for f in cfg.eval.semi_fractions),
            "eval.semi_fractions",
            cfg.eval.semi_fractions,
            "a non-empty list of floats in (0, 1]",
        ),
        (cfg.eval.semi_epochs >= 1, "eval.semi_epochs", cfg.eval.semi_epochs, "an integer >= 1"),
        (cfg.eval.semi_lr > 0, "eval.semi_lr", cfg.eval.semi_lr, "a float > 0"),
        (cfg.eval.semi_head_lr > 0, "eval.semi_head_lr", cfg.eval.semi_head_lr, "a float > 0"),
        (cfg.eval.semi_batch_size >= 2, "eval.semi_batch_size", cfg.eval.semi_batch_size, "an integer >= 2"),
        (
            cfg.train.max_steps is None or cfg.train.max_steps >= 1,
            "train.max_steps",
            cfg.train.max_steps,
            "null or an integer >= 1",
        ),
        (
            cfg.eval.test_subset is None or cfg.eval.test_subset >= 1,
            "eval.test_subset",
            cfg.eval.test_subset,
            "null or an integer >= 1",
        ),
        (
            cfg.eval.monitor_every is None or cfg.eval.monitor_every >= 1,
            "eval.monitor_every",
            cfg.eval.monitor_every,
            "null or an integer >= 1",
        ),
        (cfg.eval.monitor_images >= 10, "eval.monitor_images", cfg.eval.monitor_images, "an integer >= 10"),
        (
            cfg.train.checkpoint_every is None or cfg.train.checkpoint_every >= 1,
            "train.checkpoint_every",
            cfg.train.checkpoint_every,
            "null or an integer >= 1",
        ),
    ]
    for ok, key, value, accepted in checks:
        if not ok:
            raise ConfigError(f"config key {key}: {value!r} is not accepted; expected {accepted}")
    cm = cfg.compmod
    checks = [
        (cm.order >= 1, "compmod.order", cm.order, "an integer >= 1 (even recommended)"),
        (cm.lambda1 >= 0, "compmod.lambda1", cm.lambda1, "a float >= 0"),
        (cm.lambda2 >= 0, "compmod.lambda2", cm.lambda2, "a float >= 0"),
        (cm.eps_sq > 0, "compmod.eps_sq", cm.eps_sq, "a float > 0"),
        (cm.meta.every >= 1, "compmod.meta.every", cm.meta.every, "an integer >= 1"),
        (
            cm.mixup_alpha is None or 0 <= cm.mixup_alpha <= 1,
            "compmod.mixup_alpha",
            cm.mixup_alpha,
            "null or a float in [0, 1]",
        ),
        (cm.meta.r is None or cm.meta.r > 0, "compmod.meta.r", cm.meta.r, "null or a float > 0"),
    ]
    for ok, key, value, accepted in checks:
        if not ok:
            raise ConfigError(f"config key {key}: {value!r} is not accepted; expected {accepted}")
    for op in cfg.augment.ops or []:
        if op not in AUGMENT_OPS:
            raise ConfigError(
                f"config key augment.ops: unknown op {op!r}{did_you_mean(op, AUGMENT_OPS)}; "
                f"choose from: {', '.join(AUGMENT_OPS)}"
            )
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
        raise ConfigError(
            f"config key train.device: {dev!r} is not accepted; expected auto, cpu, cuda or cuda:N"
        )


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
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"config key {path}: {value!r} is not accepted{did_you_mean(str(value), map(str, args))}; "
                f"choose one of: {', '.join(map(str, args))}"
            )
        return value
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
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {path}: expected a string, got {_describe(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(
                f"config key {path}: expected a list of {len(args)} values, got {_describe(value)}"
            )
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {path}: expected a list, got {_describe(value)}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"config key {path}: unsupported annotation {tp!r}")  # a bug in the schema
