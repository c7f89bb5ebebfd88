"""Run policies, one small module each: backoff, deadline, TTL, suspend, stall, clean-up."""
