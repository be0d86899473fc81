"""Device descriptors (YAML) shipped with edgekit; read them through edgekit.targets_registry."""
