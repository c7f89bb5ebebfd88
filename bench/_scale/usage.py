"""CPU seconds and peak RSS of a process, sampled from a thread (psutil)."""

from __future__ import annotations

import threading

import psutil


class Usage(threading.Thread):
    """Samples a process every `interval` seconds; CPU counts from when sampling started."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(name=f"usage-{pid}", daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.stopped = threading.Event()
        self.cpu_start = _cpu(self.proc)
        self.cpu_seconds = 0.0
        self.peak_rss = 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Take one sample (the process may be gone: keep the last values)."""
        try:
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            self.cpu_seconds = _cpu(self.proc) - self.cpu_start
        except psutil.Error:
            pass

    def finish(self) -> tuple[float, int]:
        """Stop sampling; (CPU seconds used, peak RSS bytes)."""
        self.sample()
        self.stopped.set()
        return self.cpu_seconds, self.peak_rss


def _cpu(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process."""
    t = proc.cpu_times()
    return float(t.user + t.system)
