"""WebSocket: the sans-I/O engine (the websockets library) and the connection that drives it."""
