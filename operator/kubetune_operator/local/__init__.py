"""`kubetune run`: the operator's Plan executed as local processes instead of pods."""
