"""Length limits of the text fields clients send, shared by the write side (what may be
stored) and the read side (what may be asked for): a read can never need a longer value
than a write could have stored, so anything longer is refused before it costs memory."""

from __future__ import annotations

# Names, categories, addresses: every short text field.
MAX_TEXT = 200
# Descriptions (products, webhook subscriptions).
MAX_DESCRIPTION = 5000
# An email address (RFC 5321's path limit).
MAX_EMAIL = 254
# The longest spelling of a UUID a reader accepts: "urn:uuid:" and 36 characters.
MAX_UUID_CHARS = 45
