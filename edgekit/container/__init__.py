"""Jetson containers of a deployment: build the image for a board's L4T release, move it onto the board."""
