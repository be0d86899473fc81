"""Elastic subnets: the nested-width model, depth and width selection, plans and extraction."""
