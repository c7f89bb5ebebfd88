"""FineTuneSweep and FineTuneSchedule: the fine-tuning lifecycle built on FineTuneJob."""
