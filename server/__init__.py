"""Tallystick: the server package (see ../shared/DESIGN.md)."""
