"""HTTP/3 (RFC 9114) over QUIC (aioquic): the endpoint, one connection, one stream."""
