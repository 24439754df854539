"""Relays: consumers of the event log that publish every event elsewhere, exactly once
(:mod:`projector.relay.nats_relay`: NATS JetStream)."""

from projector.relay.nats_relay import NAME, NatsRelay, RelayUnavailable

__all__ = ["NAME", "NatsRelay", "RelayUnavailable"]
