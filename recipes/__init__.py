"""Elastic-build recipes (YAML), shipped with the package."""
