"""Webhook URLs the SSRF guard must refuse (without CQRS_WEBHOOKS_ALLOW_PRIVATE), shared by
the URL rules' unit table, the write server's end-to-end check and the hostile-input
fuzzer. Each maps to a fragment of the reason the guard gives."""

from __future__ import annotations

# IP literals in every spelling a resolver (inet_aton, getaddrinfo) or an IPv6 stack would
# still take to a loopback, private, link-local or unspecified address.
IP_SPELLINGS: dict[str, str] = {
    "http://127.0.0.1/": "not public",
    "http://127.0.0.1./": "not public",
    "http://2130706433/": "another spelling",  # decimal
    "http://017700000001/": "another spelling",  # octal, one number
    "http://0x7f000001/": "another spelling",  # hex, one number
    "http://0x7f.0.0.1/": "another spelling",  # hex part
    "http://0x7F.1/": "another spelling",
    "http://0177.0.0.1/": "",  # octal parts: httpx itself refuses the dotted quad
    "http://127.1/": "another spelling",  # short
    "http://127.0.1/": "another spelling",
    "http://0/": "another spelling",  # 0.0.0.0
    "http://0.0.0.0/": "not public",
    "http://10.1/": "another spelling",
    "http://169.254.169.254/": "not public",  # cloud metadata
    "http://2852039166/": "another spelling",  # 169.254.169.254
    "http://1.2.3.4.5/": "not one",  # numeric last label, not an address
    "http://example.0x1/": "not one",
    "http://[::1]/": "not public",
    "http://[::]/": "not public",
    "http://[::127.0.0.1]/": "carrying 127.0.0.1",  # IPv4-compatible
    "http://[::7f00:1]/": "carrying 127.0.0.1",
    "http://[::ffff:127.0.0.1]/": "not public",  # IPv4-mapped
    "http://[::ffff:7f00:1]/": "not public",
    "http://[::ffff:0:127.0.0.1]/": "carrying 127.0.0.1",  # SIIT (IPv4-translated)
    "http://[::ffff:0:a9fe:a9fe]/": "carrying 169.254.169.254",
    "http://[64:ff9b::127.0.0.1]/": "carrying 127.0.0.1",  # NAT64 well-known prefix
    "http://[64:ff9b::a00:1]/": "carrying 10.0.0.1",
    "http://[64:ff9b:1::7f00:1]/": "NAT64 local use",  # RFC 8215 local-use prefix
    "http://[2002:7f00:1::1]/": "carrying 127.0.0.1",  # 6to4
    "http://[2002:a9fe:a9fe::]/": "carrying 169.254.169.254",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/": "not public",  # Teredo (127.0.0.1)
    "http://[fe80::1]/": "not public",
    "http://[fe80::1%25eth0]/": "zone",
    "http://[fd00::1]/": "not public",
    "http://[fc00::1]/": "not public",
    "http://[ff02::1]/": "not public",
}

# Text the HTTP client would not send (or would send elsewhere): the guard reads the URL
# with the client's parser, so these never become subscriptions that fail forever.
UNSENDABLE: dict[str, str] = {
    "http://example.com\t.127.0.0.1/": "whitespace or control",
    "http://example.com\n/": "whitespace or control",
    "http://exa mple.com/": "whitespace or control",
    "http://example.com\u200b/": "whitespace or control",
    # Full-width letters: IDNA (the client's) refuses them.
    "http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/": "not a valid URL",  # "example"
    "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/": "not a valid URL",
    "http://exa%6dple.com/": "not a valid DNS name",
    "http://127.0.0.1%2e/": "not a valid DNS name",
    "http://example.com:99999/": "port",
    "http://example.com:0/": "port",
    "http://u:p@example.com/": "credentials",
    "http://example.com\\@127.0.0.1/": "credentials",
    "http://example.com/#f": "fragment",
    "http:example.com/": "http:// or https://",
    "http:/example.com/": "http:// or https://",
    "ftp://example.com/": "http:// or https://",
    "http://localhost/": "local or metadata",
    "http://LOCALHOST./": "local or metadata",
    "http://api.localhost/": "local or metadata",
    "http://metadata.google.internal/": "local or metadata",
    "http://" + "a" * 64 + ".example/": "not a valid DNS name",
    "http://-a.example/": "not a valid DNS name",
}

REFUSED: dict[str, str] = {**IP_SPELLINGS, **UNSENDABLE}
