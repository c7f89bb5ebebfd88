"""Pure reconcile steps: parse -> resolve defaults -> render children -> observe -> status."""
