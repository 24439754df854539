"""Entry point used by ``cqrs write-server``."""

from write_server.server import serve

__all__ = ["serve"]
