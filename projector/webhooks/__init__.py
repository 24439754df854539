"""Webhooks: the fan-out consumer of the event log and the dispatcher that delivers.

- :mod:`.fanout` (``webhooks:fanout``) is a consumer like the projections: in one
  transaction per batch it folds the subscriptions' own events into
  ``webhooks.subscriptions``, adds one ``webhooks.deliveries`` row per (active,
  matching subscription, event) and moves its checkpoint.
- :mod:`.dispatcher` (lease ``webhooks:dispatch``) sends each subscription's pending
  deliveries in log order through the API gateway (:mod:`common.gateway`), one worker
  per subscription, so a slow or dead endpoint only ever delays itself.
"""
