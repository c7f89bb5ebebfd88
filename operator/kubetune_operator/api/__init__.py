"""The FineTuneJob API: spec and status models, constants, and the CRD built from them."""

from kubetune_operator.api.constants import API_VERSION, GROUP, KIND, PLURAL, VERSION
from kubetune_operator.api.spec import FineTuneJob, FineTuneJobSpec
from kubetune_operator.api.status import FineTuneJobStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
]
