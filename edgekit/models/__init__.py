"""Models: the registry of known names, `--model` references, the local cache, pulling, weights."""
