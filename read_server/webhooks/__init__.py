"""ListWebhookSubscriptions and ListWebhookDeliveries (see :mod:`.rpcs`)."""
