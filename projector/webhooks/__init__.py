"""Webhooks: the fan-out consumer of the event log and the dispatcher that delivers.

- :mod:`.fanout` (``webhooks:fanout``) is a consumer like the projections: in one
  transaction per batch it folds the subscriptions' own events into
  ``webhooks.subscriptions``, adds one ``webhooks.deliveries`` row per (active,
  matching subscription, event) and moves its checkpoint.
- :mod:`.dispatcher` (lease ``webhooks:dispatch``) sends each subscription's pending
  deliveries through the API gateway (:mod:`common.gateway`), one worker per subscription
  with up to ``webhooks_max_in_flight`` deliveries in flight, in the order :mod:`.order`
  keeps (one aggregate's strictly in log order), so a slow or dead endpoint only ever
  delays itself.
"""
