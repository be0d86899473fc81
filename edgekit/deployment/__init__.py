"""Deploying under a budget: targets, latency LUTs and their predictor, measurement, profile, choice, pipeline."""
