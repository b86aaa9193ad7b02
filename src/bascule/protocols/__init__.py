"""Protocols: bytes to requests. They know HTTP, never ASGI or WSGI (they fill in Exchanges)."""
