"""Modal screens: help, generation settings, one-line text (rename, system prompt), confirm."""
