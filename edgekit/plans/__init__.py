"""Plans for the built-in models, shipped so the main job needs no planning step."""
