"""The chat screen's parts: the conversation list, the message log, the stats panel."""
