"""tally-relay: stores, forwards and witnesses Tallystick ledgers (DESIGN §7).

The layout is the architecture: ``store`` is what must last (``RelayStore``, SQLite
today), ``network`` one served network over it (ledger, port, fan-out, witness),
``relay`` the asyncio websockets I/O layer driving ``sync.protocol.Connection`` with the
relay's limits, ``peering`` this relay as a client of another, ``telemetry`` its logs and
metrics, ``cli`` the ``tally-relay`` command.
"""
