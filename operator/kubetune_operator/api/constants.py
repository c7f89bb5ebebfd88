"""Names of the API and of the objects the operator makes.

What the trainer must agree on too (API group, version and plural, exit codes, ports) is
defined in kubetune_trainer.contract and imported here; the rest is the operator's own.
"""

from kubetune_trainer.contract import (  # noqa: F401 (re-exported as c.GROUP, ...)
    EXIT_PREEMPTED,
    GROUP,
    MASTER_PORT,
    PLURAL,
    TRAINER_METRICS_PORT,
    VERSION,
)

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
SINGULAR = "finetunejob"
SHORT_NAMES = ["ftj"]
CATEGORIES = ["all", "kubetune"]
CRD_NAME = f"{PLURAL}.{GROUP}"

# The lifecycle kinds built on FineTuneJob: a hyper-parameter sweep and a retraining schedule.
SWEEP_KIND = "FineTuneSweep"
SWEEP_PLURAL = "finetunesweeps"
SWEEP_SINGULAR = "finetunesweep"
SWEEP_SHORT_NAMES = ["ftsweep"]
SCHEDULE_KIND = "FineTuneSchedule"
SCHEDULE_PLURAL = "finetuneschedules"
SCHEDULE_SINGULAR = "finetuneschedule"
SCHEDULE_SHORT_NAMES = ["ftsched"]

# Labels and annotations the operator puts on every child object.
LABEL_JOB = f"{GROUP}/job-name"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_ROLE = f"{GROUP}/role"
LABEL_WORKER_INDEX = f"{GROUP}/worker-index"
LABEL_SWEEP = f"{GROUP}/sweep"  # on a sweep's trial jobs: the sweep's name
LABEL_TRIAL = f"{GROUP}/trial"  # on a trial job: its index in the sweep
LABEL_SCHEDULE = f"{GROUP}/schedule"  # on a schedule's run jobs and data-watch pods
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubetune-operator"
FIELD_MANAGER = "kubetune-operator"

# Kueue's label for the LocalQueue of a job (accepted on a FineTuneJob besides spec.queue.name).
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"

TRAINER_METRICS_PORT_NAME = "metrics"  # of local rank 0; rank r's is metrics-r (the chart's too)
OPERATOR_METRICS_PORT = 8080

# Longest job name: pod hostnames "<name>-a<attempt>-<index>" must fit a 63-char DNS label.
MAX_JOB_NAME_LENGTH = 45
# Longest sweep and schedule names: their jobs are "<sweep>-t<trial>" (trials < 1000) and
# "<schedule>-r<run>" (runs < 10^6), which must fit MAX_JOB_NAME_LENGTH.
MAX_SWEEP_NAME_LENGTH = MAX_JOB_NAME_LENGTH - len("-t999")
MAX_SCHEDULE_NAME_LENGTH = MAX_JOB_NAME_LENGTH - len("-r999999")
