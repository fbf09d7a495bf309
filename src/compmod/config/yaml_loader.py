"""A YAML loader with YAML 1.2 core-schema scalars: only true/false are booleans (so `mode: off` stays a
string) and `1e-3` is a float, unlike PyYAML's YAML 1.1 defaults. A key given twice in one mapping (a
repeated key or a repeated section) is an error naming it and both lines, where PyYAML keeps the last."""

from __future__ import annotations

import re
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping holds the same key twice; the message names the dotted key and both lines."""


class ConfigLoader(yaml.SafeLoader):
    pass


ConfigLoader.yaml_implicit_resolvers = {
    key: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")
    ]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def _check_duplicates(node: yaml.Node, path: str, seen_nodes: set[int]) -> None:
    """Raise DuplicateKeyError for the first mapping under `node` that names a key twice. Keys brought in
    by a merge (`<<: *anchor`) may be overridden, as YAML allows; only a mapping's own keys count."""
    if id(node) in seen_nodes:  # an alias to a node already checked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                _check_duplicates(value_node, path, seen_nodes)
                continue
            key = key_node.value
            dotted = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key in first_line:
                what = "section" if isinstance(value_node, yaml.MappingNode) else "key"
                raise DuplicateKeyError(
                    f"duplicate {what} {dotted} at line {line} (first given at line {first_line[key]}); "
                    "give each key once"
                )
            first_line[key] = line
            _check_duplicates(value_node, dotted, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, f"{path}[{i}]", seen_nodes)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with `ConfigLoader`; DuplicateKeyError for a key given twice."""
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, "", set())
        return loader.construct_document(node)
    finally:
        loader.dispose()
