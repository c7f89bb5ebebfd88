"""kubetune operator: turns FineTuneJobs into gangs of DeepSpeed trainer pods."""

__version__ = "0.1.0"
