"""Reading manifests the way kubectl does.

PyYAML follows YAML 1.1, where `2e-4` (no dot) is a string; kubectl's YAML reads it as a
number. With strict API types that difference would refuse `learningRate: 2e-4` offline
while the apiserver accepts it, so manifests are read with YAML 1.2 number rules.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kubetune_operator.api.spec import FineTuneJob

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Far deeper than any FineTuneJob; bounds the loader's own recursion.
MAX_DEPTH = 64


class ManifestError(yaml.YAMLError, ValueError):
    """A manifest refused before it is built: aliases, duplicate keys, too deep or too big."""


class ManifestLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as 1e-5 and 2E+3 as numbers, and refuses
    aliases (a few hundred bytes of them expand to millions of nodes), duplicate keys (kubectl
    refuses them too) and nesting deeper than MAX_DEPTH, before building anything."""

    _depth = 0
    _keys: list[str]

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ManifestError(f"line {mark.line + 1}: aliases (*name) are not allowed")
        if not hasattr(self, "_keys"):
            self._keys = []
        # A mapping value is composed with its key node as `index`: keep the path for messages.
        key = index.value if isinstance(index, yaml.ScalarNode) else f"[{index}]"
        self._depth += 1
        self._keys.append(str(key))
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ManifestError(
                    f"line {mark.line + 1}: {self._where()}: nested deeper than {MAX_DEPTH} levels"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._keys.pop()

    def _where(self) -> str:
        """The dotted path being composed (its first levels), e.g. spec.deepspeed.config.a..."""
        keys = [k for k in self._keys[1:] if k != "[None]"]
        shown = ".".join(keys[:8])
        return shown + ("..." if len(keys) > 8 else "")

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ManifestError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_documents(text: str) -> list[Any]:
    """Every YAML document in `text`, numbers read as kubectl reads them; hostile input
    (alias bombs, deep nesting, duplicate keys, huge files) is refused with ManifestError."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"larger than {MAX_MANIFEST_BYTES} bytes")
    return list(yaml.load_all(text, Loader=ManifestLoader))


def load_manifest(path: str) -> FineTuneJob:
    """Parse and validate a FineTuneJob manifest file (the first FineTuneJob document in it)."""
    try:
        docs = load_documents(Path(path).read_text())
    except ManifestError as err:
        raise ManifestError(f"{path}: {err}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "FineTuneJob":
            return FineTuneJob.model_validate(doc)
    raise ValueError(f"{path}: no FineTuneJob document found")
