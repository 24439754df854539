"""Watch streams: live updates of documents from the projection (QueryService.Watch*)."""
