"""Run policies, one module each, run in order by reconcile.status.PIPELINE.

Each module's `step(p)` owns the whole of its policy: it reads the Pass (job, status, pods,
clock), sets the phase, conditions, deletions, events and requeues its policy calls for, and
returns True when the pass ends with it. A new policy is a new module here, a line in
PIPELINE and a table test in tests/unit/operator/policies/.
"""
