"""CLI commands, one module per command group; each only parses options and renders results."""

from edgekit.errors import UsageError


def key_values(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """Repeated `--flag KEY=VALUE` options as a dict; a pair without `=` or a key is a usage error."""
    found = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} takes KEY=VALUE, not '{pair}'")
        found[key] = value
    return found
