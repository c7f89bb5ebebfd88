"""kubetune trainer: DeepSpeed ZeRO fine-tuning of Hugging Face causal LMs."""

__version__ = "0.1.0"
