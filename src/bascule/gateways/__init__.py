"""Gateways: requests to apps. They know ASGI and WSGI, never sockets (they use the Exchange seam)."""
