"""Checkpoints: local DeepSpeed saves uploaded per rank, committed by a rank-0 manifest."""
