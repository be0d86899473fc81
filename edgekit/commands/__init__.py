"""CLI commands, one module per command group; each only parses options and renders results."""
