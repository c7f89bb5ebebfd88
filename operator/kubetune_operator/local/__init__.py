"""`kubetune run`: execute a FineTuneJob's plan as local processes."""
