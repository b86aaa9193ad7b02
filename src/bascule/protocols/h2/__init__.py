"""HTTP/2: the connection (h2), one stream per request, frames, HPACK fields, and the output scheduler."""
