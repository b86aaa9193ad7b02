"""HTTP/1.1: the connection (llhttp via httptools), its exchange, and the checks llhttp leaves to us."""
