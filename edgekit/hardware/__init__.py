"""The machine: what this host is, a Jetson's power state, measured bandwidth and compute, doctor."""
