"""Helpers of the control-plane scale benchmark (bench/control_plane.py)."""
