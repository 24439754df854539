"""The ProjectionStore contract against the in-memory store."""

from __future__ import annotations

import pytest

from common.entities import Entity as ProjectionKind
from projector.stores.memory_store import MemoryProjectionStore
from projector.stores.port import ProjectionStore
from tests.contract.projection_store import Lose, NewStore, StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def new_store(self) -> NewStore:
        async def make(kind: ProjectionKind) -> ProjectionStore:
            return MemoryProjectionStore(kind)

        return make

    @pytest.fixture
    def lose(self) -> Lose:
        async def lose(store: ProjectionStore) -> None:
            assert isinstance(store, MemoryProjectionStore)
            store.lose()

        return lose
