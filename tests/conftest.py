"""Every test runs with the ledger's invariants asserted after each batch (DESIGN §3),
in this process and in the ``tally`` and ``tally-relay`` processes tests start."""

import os

os.environ["TALLY_CHECK"] = "1"

import wallet.ledger

wallet.ledger.CHECK = True
