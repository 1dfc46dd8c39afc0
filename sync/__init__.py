"""Tallystick: the sync package (see ../shared/DESIGN.md)."""
