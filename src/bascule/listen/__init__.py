"""The front door: listening sockets (typed specs) and what happens between accept and a protocol."""
