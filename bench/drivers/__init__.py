"""Load generators; each turns a :class:`~bench.drivers.builtin.Load` into measured calls."""
