"""Where conversations live: JSONL files under the user's data dir."""
