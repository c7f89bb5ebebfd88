# kubetune: `make demo` runs a fine-tune on this machine; `make test` runs every test CI can run.
SHELL := /bin/bash
VENV ?= $(HOME)/.cache/kubetune/venv
PY := $(VENV)/bin/python
K8S_BIN_DIR ?= $(shell bash hack/build-control-plane.sh --print-dir)
export PATH := $(VENV)/bin:$(PATH)
export NO_PROXY := 127.0.0.1,localhost
export no_proxy := 127.0.0.1,localhost
PYTEST_ARGS ?=

.PHONY: help setup control-plane schedulers node test-images test test-long test-unit test-k8s test-e2e lint typecheck crds check-crds chart docs demo bench-trainer bench-scale bench-gpu images clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

setup: ## Create the Python environment (once per machine) and install this checkout
	@bash hack/setup.sh >/dev/null

control-plane: ## Build etcd, kube-apiserver, controller-manager, scheduler, kwok, helm (cached)
	@bash hack/build-control-plane.sh all

schedulers: control-plane ## Build Kueue, the scheduler-plugins scheduler and vc-scheduler (cached)
	@bash hack/build-schedulers.sh all

node: ## Build kubelet, containerd, crictl, CoreDNS, MinIO (cached); install runc, CNI plugins, buildah, mmdebstrap
	@bash hack/install-node-packages.sh
	@bash hack/build-node.sh all >/dev/null

test-images: setup node ## Build (or find cached) the operator and CPU trainer images the e2e tests run
	@bash hack/build-images.sh --test all >/dev/null

test: setup control-plane schedulers node test-images ## What CI runs: unit, k8s, e2e on a real node, less the `long` tests (gpu tests skip without CUDA)
	KUBETUNE_BIN_DIR=$(K8S_BIN_DIR) $(PY) -m pytest -m "not long" --durations=25 $(PYTEST_ARGS)

test-long: setup control-plane schedulers node test-images ## The long whole-system tests make test leaves out (sweeps and schedules, the benchmark gate, DPO under ZeRO-2/3)
	KUBETUNE_BIN_DIR=$(K8S_BIN_DIR) $(PY) -m pytest -m long --durations=25 $(PYTEST_ARGS)

test-unit: setup ## Unit tests only (no cluster)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-k8s: setup control-plane schedulers ## Tests against the real kube-apiserver only
	KUBETUNE_BIN_DIR=$(K8S_BIN_DIR) $(PY) -m pytest -m k8s $(PYTEST_ARGS)

test-e2e: setup control-plane schedulers node test-images ## Whole-system tests: the trainer's processes, and a real node (needs root)
	KUBETUNE_BIN_DIR=$(K8S_BIN_DIR) $(PY) -m pytest -m e2e $(PYTEST_ARGS)

lint: setup ## ruff
	$(PY) -m ruff check operator trainer tests bench harness
	$(PY) -m ruff format --check operator trainer tests bench harness

typecheck: setup ## mypy
	$(PY) -m mypy

crds: setup ## Regenerate crds/ from the API models
	for kind in finetunejobs finetunesweeps finetuneschedules; do \
	  $(PY) -m kubetune_operator.cli crd $$kind > crds/kubetune.dev_$$kind.yaml || exit 1; done

chart: setup crds ## Copy the CRDs into the Helm chart and lint it
	cp crds/kubetune.dev_*.yaml charts/kubetune/crds/
	$(K8S_BIN_DIR)/helm lint charts/kubetune

docs: setup crds ## Regenerate docs/api-reference.md from the CRD
	$(PY) hack/gen_api_reference.py

demo: setup ## Fine-tune a small model with LoRA under ZeRO-2 on 2 CPU processes
	@test -f runs/quickstart/base/config.json || $(PY) -m kubetune_trainer.tiny --out runs/quickstart/base \
	  --write-data runs/quickstart/train.jsonl --data runs/quickstart/train.jsonl --records 512
	rm -rf runs/quickstart/checkpoints runs/quickstart/model
	$(VENV)/bin/kubetune run examples/quickstart.yaml

bench-trainer: setup ## Trainer step time vs a bare DeepSpeed loop (ratio)
	$(PY) bench/trainer_overhead.py

bench-scale: setup control-plane ## Control-plane scale benchmark, N=100
	KUBETUNE_BIN_DIR=$(K8S_BIN_DIR) $(PY) bench/control_plane.py --jobs 100

bench-gpu: setup ## GPU throughput vs a plain DeepSpeed loop (needs a GPU)
	$(PY) bench/gpu_throughput.py

images: ## Build both images (docker, else buildah); BASE=local: Debian base, TRAINER=cpu: CPU trainer
	BASE=$(or $(BASE),registry) TRAINER=$(or $(TRAINER),cuda) TAG=$(or $(TAG),dev) bash hack/build-images.sh all

clean: ## Remove build and test leftovers from the checkout
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache runs kubetune-output
