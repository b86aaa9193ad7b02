"""Certificates for the TLS tests, made with trustme: server certificates for 127.0.0.1, client certificates.

Not a test module: test_tls.py and integration/test_it_tls.py import it (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class ServerFiles:
    """A server certificate written to ``cert`` (chain) and ``key``, issued by ``ca``."""

    ca: trustme.CA
    leaf: trustme.LeafCert
    cert: Path
    key: Path

    @property
    def leaf_pem(self) -> str:
        return self.leaf.cert_chain_pems[0].bytes().decode()

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's CA."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def server_files(directory: Path, ca: trustme.CA | None = None, name: str = "server") -> ServerFiles:
    """Issue a certificate for 127.0.0.1 and localhost and write it as NAME.pem and NAME.key."""
    ca = ca or trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return ServerFiles(ca, leaf, cert, key)


def write_ca(ca: trustme.CA, path: Path) -> Path:
    path.write_bytes(ca.cert_pem.bytes())
    return path


def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    """A client certificate for 'alice' whose subject needs RFC 4514 escaping (a comma in O)."""
    return ca.issue_cert("alice@example.org", common_name="alice", organization_name="Example, Inc.",
                         organization_unit_name="QA")
