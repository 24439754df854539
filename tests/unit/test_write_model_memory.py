"""The write-model contract against the in-memory adapter."""

from __future__ import annotations

import pytest

from tests.contract.write_model import WriteModelContract
from write_server.adapters.memory import InMemoryStore, InMemoryUnitOfWork
from write_server.service_layer.service import CommandService


class TestInMemoryWriteModel(WriteModelContract):
    @pytest.fixture(autouse=True)
    def _service(self) -> None:
        self.store = InMemoryStore()
        self.service = CommandService(lambda: InMemoryUnitOfWork(self.store))

    async def events_of(self, aggregate_id: str) -> list[str]:
        return [
            r.event.event_type for r in self.store.events if r.event.aggregate_id == aggregate_id
        ]

    async def stock_of(self, product_id: str) -> int:
        return self.store.products[product_id].stock

    async def stored_replies(self) -> list[str]:
        return [repr(stored) for stored in self.store.requests.values()]
