"""Every test runs with the ledger's invariants asserted after each batch (DESIGN §3),
in this process and in the ``tally`` and ``tally-relay`` processes tests start."""

import os

os.environ["TALLY_CHECK"] = "1"

import wallet.ledger

wallet.ledger.CHECK = True


from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """Long-running processes (``tests.test_sync_client.Proc``), killed at the end
    whatever happened."""
    started: list[Any] = []
    yield started
    for p in started:
        p.kill()
