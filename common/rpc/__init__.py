"""The gRPC server skeleton both servers are built from.

- :mod:`common.rpc.server`: ``build_server`` (services plus health and reflection,
  bound but not started) and ``serve_until_signalled`` (graceful SIGTERM);
- :mod:`common.rpc.handlers`: every method of every service (ours, health,
  reflection) is wrapped once: it decodes the request itself (undecodable bytes and
  NUL characters are INVALID_ARGUMENT), maps errors to statuses and records metrics;
- :mod:`common.rpc.status`: ``AppError`` -> ``google.rpc.Status``, bounded in size;
- :mod:`common.rpc.limits`: what one client may hold (streams per connection,
  connections, idle and age, health Watch streams), given to ``build_server``.
"""
