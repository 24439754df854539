"""Projection stores: the ``ProjectionStore`` port and its Redis, PostgreSQL and in-memory adapters."""
