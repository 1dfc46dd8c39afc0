"""Tallystick: the tui package (see ../shared/DESIGN.md)."""
