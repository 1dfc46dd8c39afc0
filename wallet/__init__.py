"""Tallystick's ledger core: keys, signed chains, validation, the CRDT gate and the store."""
