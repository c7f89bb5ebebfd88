"""Write operator/kubetune_operator/api/k8s_types.json from kube-apiserver's core/v1 OpenAPI.

    kubectl get --raw /openapi/v3/api/v1 > core-v1.json   # any cluster of the supported version
    python hack/gen_k8s_types.py core-v1.json

Then regenerate the CRD (`make crds`). tests/k8s/test_k8s_types.py checks the file against the
apiserver the tests run.
"""

from __future__ import annotations

import json
import sys

from kubetune_operator.api.k8s_types import SOURCE, extract


def main() -> int:
    with open(sys.argv[1]) as f:
        SOURCE.write_text(json.dumps(extract(json.load(f)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SOURCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
