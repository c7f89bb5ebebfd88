"""Reading manifests the way kubectl does.

PyYAML follows YAML 1.1, where `2e-4` (no dot) is a string; kubectl's YAML reads it as a
number. With strict API types that difference would refuse `learningRate: 2e-4` offline
while the apiserver accepts it, so manifests are read with YAML 1.2 number rules.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class ManifestLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as 1e-5 and 2E+3 as numbers."""


ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_documents(text: str) -> list[Any]:
    """Every YAML document in `text`, numbers read as kubectl reads them."""
    return list(yaml.load_all(text, Loader=ManifestLoader))
