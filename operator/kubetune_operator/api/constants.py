"""Names shared by the operator, the trainer and the chart: one place, so they cannot drift."""

GROUP = "kubetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ["ftj"]
CATEGORIES = ["all", "kubetune"]
CRD_NAME = f"{PLURAL}.{GROUP}"

# Labels and annotations the operator puts on every child object.
LABEL_JOB = f"{GROUP}/job-name"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_ROLE = f"{GROUP}/role"
LABEL_WORKER_INDEX = f"{GROUP}/worker-index"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubetune-operator"
FIELD_MANAGER = "kubetune-operator"

# Ports inside each trainer pod.
MASTER_PORT = 29500
TRAINER_METRICS_PORT = 9400  # of local rank 0; rank r of a pod serves on 9400 + r
TRAINER_METRICS_PORT_NAME = "metrics"  # of local rank 0; rank r's is metrics-r (the chart's too)
OPERATOR_METRICS_PORT = 8080

# Exit code the trainer uses after SIGTERM made it save a checkpoint and stop.
EXIT_PREEMPTED = 143 - 100  # 43: distinct from 143 (killed by SIGTERM without saving)

# Longest job name: pod hostnames "<name>-a<attempt>-<index>" must fit a 63-char DNS label.
MAX_JOB_NAME_LENGTH = 45
