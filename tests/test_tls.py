"""Tests for bascule.tls: the server context from the ssl_* options, its errors, reload, and the tls extension.

Handshakes run in memory (two ssl.SSLObject over MemoryBIOs), so these tests need no sockets; the
integration tests (integration/test_it_tls.py) do the same over real connections with real clients.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)
from tls_certs import ServerFiles, client_cert, server_files, write_ca

from bascule import tls
from bascule.config import Config
from bascule.errors import ConfigError

ALPN = ["h2", "http/1.1"]


@pytest.fixture
def files(tmp_path: Path) -> ServerFiles:
    return server_files(tmp_path)


def config(files: ServerFiles | None = None, **options: Any) -> Config:
    if files is not None:
        options.setdefault("ssl_certfile", str(files.cert))
        options.setdefault("ssl_keyfile", str(files.key))
    return Config(app="x:app", **options)


def context_error(cfg: Config) -> str:
    with pytest.raises(ConfigError) as info:
        tls.server_context(cfg, ALPN)
    message = str(info.value)
    assert "\n" not in message
    return message


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake between two in-memory endpoints; (server side, client side). Raises SSLError."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    done: set[str] = set()
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if name in done:
                continue
            try:
                side.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if len(done) == 2:
            # TLS 1.3: the server checks a client certificate after the client thinks it is done
            client.write(b"x")
            s_in.write(c_out.read())
            assert server.read(1) == b"x"
            return server, client
    raise AssertionError("handshake did not finish")


def server_cert_of(client: ssl.SSLObject) -> bytes:
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return der


# -- config validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "needle"), [
    ({"ssl_keyfile": "k.pem"}, "ssl_keyfile needs ssl_certfile"),
    ({"ssl_ca_certs": "ca.pem"}, "ssl_ca_certs only applies with TLS"),
    ({"ssl_keyfile_password": "x"}, "ssl_keyfile_password only applies with TLS"),
    ({"ssl_ciphers": "ALL"}, "ssl_ciphers only applies with TLS"),
    ({"ssl_min_version": "TLSv1.3"}, "ssl_min_version only applies with TLS"),
    ({"ssl_certfile": "c.pem", "ssl_cert_reqs": 3}, "ssl_cert_reqs must be 0"),
    ({"ssl_certfile": "c.pem", "ssl_cert_reqs": -1}, "ssl_cert_reqs must be 0"),
    ({"ssl_certfile": "c.pem", "ssl_cert_reqs": 2}, "add --ssl-ca-certs"),
    ({"ssl_certfile": "c.pem", "ssl_cert_reqs": 1}, "add --ssl-ca-certs"),
    ({"ssl_certfile": "c.pem", "ssl_min_version": "TLSv1.1"}, "ssl_min_version must be one of TLSv1.2, TLSv1.3"),
    ({"ssl_certfile": ""}, "ssl_certfile must be a file path"),
])
def test_config_rejects_inconsistent_tls_options(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Config(app="x:app", **options)


def test_config_tls_enabled() -> None:
    assert not Config(app="x:app").tls_enabled
    assert Config(app="x:app", ssl_certfile="c.pem").tls_enabled
    assert Config(app="x:app", ssl_certfile="c.pem", ssl_cert_reqs=2, ssl_ca_certs="ca.pem").tls_enabled


# -- server_context -----------------------------------------------------------------------------------


def test_no_certfile_no_context() -> None:
    assert tls.server_context(config(), ALPN) is None
    assert tls.server_cert_pem(config()) is None


def test_context_serves_the_certificate_with_alpn_and_min_version(files: ServerFiles) -> None:
    ctx = tls.server_context(config(files), ALPN)
    assert ctx is not None
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode is ssl.CERT_NONE
    client_ctx = files.client_context()
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server, client = handshake(ctx, client_ctx)
    assert server.selected_alpn_protocol() == "h2"
    assert server_cert_of(client) == ssl.PEM_cert_to_DER_cert(files.leaf_pem)
    assert tls.server_cert_pem(config(files)) == files.leaf_pem


def test_alpn_http1_only(files: ServerFiles) -> None:
    ctx = tls.server_context(config(files), ["http/1.1"])
    assert ctx is not None
    client_ctx = files.client_context()
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server, _ = handshake(ctx, client_ctx)
    assert server.selected_alpn_protocol() == "http/1.1"


def test_certfile_holding_the_key(files: ServerFiles, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(files.leaf.private_key_and_cert_chain_pem.bytes())
    ctx = tls.server_context(config(ssl_certfile=str(both)), ALPN)
    assert ctx is not None
    _, client = handshake(ctx, files.client_context())
    assert server_cert_of(client) == ssl.PEM_cert_to_DER_cert(files.leaf_pem)


def test_min_version_tls13_refuses_a_tls12_client(files: ServerFiles) -> None:
    ctx = tls.server_context(config(files, ssl_min_version="TLSv1.3"), ALPN)
    assert ctx is not None and ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    client_ctx = files.client_context()
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(ctx, client_ctx)
    # the default (TLSv1.2) lets it in
    default = tls.server_context(config(files), ALPN)
    assert default is not None
    server, _ = handshake(default, client_ctx)
    assert server.version() == "TLSv1.2"


def test_ciphers_are_applied(files: ServerFiles) -> None:
    ctx = tls.server_context(config(files, ssl_ciphers="ECDHE+AESGCM"), ALPN)
    assert ctx is not None
    names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all("GCM" in name for name in names)
    assert "bogus" in context_error(config(files, ssl_ciphers="bogus"))


def test_missing_files(files: ServerFiles, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    assert context_error(config(files, ssl_certfile=missing)) == (
        f"cannot read ssl_certfile {missing!r}: No such file or directory; check the path and its permissions")
    assert "cannot read ssl_keyfile" in context_error(config(files, ssl_keyfile=missing))
    message = context_error(config(files, ssl_cert_reqs=2, ssl_ca_certs=missing))
    assert message.startswith(f"cannot read ssl_ca_certs {missing!r}")


def test_certfile_without_key_and_no_keyfile(files: ServerFiles) -> None:
    message = context_error(config(ssl_certfile=str(files.cert)))
    assert message == (f"ssl_certfile {str(files.cert)!r} holds no private key: add --ssl-keyfile with the key of "
                       f"this certificate")


def test_not_pem(files: ServerFiles, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    assert "holds no PEM certificate" in context_error(config(files, ssl_certfile=str(junk)))
    assert "holds no PEM private key" in context_error(config(files, ssl_keyfile=str(junk)))
    assert "holds no usable PEM CA certificate" in context_error(config(files, ssl_cert_reqs=1,
                                                                        ssl_ca_certs=str(junk)))


def test_key_does_not_match(files: ServerFiles, tmp_path: Path) -> None:
    other = server_files(tmp_path, name="other")
    message = context_error(config(files, ssl_keyfile=str(other.key)))
    assert message == (f"the private key in {str(other.key)!r} does not belong to the certificate in "
                       f"{str(files.cert)!r}: pass the key the certificate was issued for")


def encrypted_key(files: ServerFiles, tmp_path: Path, password: bytes) -> Path:
    key = load_pem_private_key(files.leaf.private_key_pem.bytes(), None)
    path = tmp_path / "encrypted.key"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(password)))
    return path


def test_encrypted_key_and_password(files: ServerFiles, tmp_path: Path) -> None:
    key = str(encrypted_key(files, tmp_path, b"s3cret"))
    assert tls.server_context(config(files, ssl_keyfile=key, ssl_keyfile_password="s3cret"), ALPN) is not None
    # never a terminal prompt: a missing password is an error at once
    assert "is encrypted: set ssl_keyfile_password" in context_error(config(files, ssl_keyfile=key))
    assert context_error(config(files, ssl_keyfile=key, ssl_keyfile_password="wrong")) == (
        f"ssl_keyfile_password does not decrypt the private key in {key!r}: check the password")


# -- client certificates and the tls extension ------------------------------------------------------


def mtls(files: ServerFiles, tmp_path: Path, reqs: int) -> tuple[ssl.SSLContext, trustme.CA]:
    client_ca = trustme.CA()
    ca_file = write_ca(client_ca, tmp_path / "clients-ca.pem")
    ctx = tls.server_context(config(files, ssl_cert_reqs=reqs, ssl_ca_certs=str(ca_file)), ALPN)
    assert ctx is not None
    return ctx, client_ca


def test_tls_extension_without_client_certificate(files: ServerFiles) -> None:
    ctx = tls.server_context(config(files), ALPN)
    assert ctx is not None
    server, _ = handshake(ctx, files.client_context())
    ext = tls.tls_extension(server, files.leaf_pem)
    assert ext == {"server_cert": files.leaf_pem, "client_cert_chain": [], "client_cert_name": None,
                   "client_cert_error": None, "tls_version": 0x0304,
                   "cipher_suite": ext["cipher_suite"]}
    assert ext["cipher_suite"] in (0x1301, 0x1302, 0x1303)  # the TLS 1.3 suites' IANA numbers


def test_tls_extension_tls12_cipher_suite(files: ServerFiles) -> None:
    ctx = tls.server_context(config(files), ALPN)
    assert ctx is not None
    client_ctx = files.client_context()
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    server, _ = handshake(ctx, client_ctx)
    ext = tls.tls_extension(server, None)
    assert ext["tls_version"] == 0x0303
    assert ext["cipher_suite"] in (0xC02B, 0xC02F)  # TLS_ECDHE_{ECDSA,RSA}_WITH_AES_128_GCM_SHA256
    assert ext["server_cert"] is None


@pytest.mark.parametrize(("name", "number"), [
    ("ECDHE-RSA-AES128-GCM-SHA256", 0xC02F), ("ECDHE-ECDSA-AES256-GCM-SHA384", 0xC02C),
    ("TLS_AES_128_GCM_SHA256", 0x1301), ("TLS_AES_256_GCM_SHA384", 0x1302),
    ("TLS_CHACHA20_POLY1305_SHA256", 0x1303),
    ("TLS_AES_128_CCM_SHA256", 0x1304), ("TLS_AES_128_CCM_8_SHA256", 0x1305),  # not enabled by default
    ("MADE-UP-CIPHER", None), ("", None),
])
def test_cipher_suite_numbers_from_openssl_names(name: str, number: int | None) -> None:
    assert tls.cipher_suite_number(name) == number


def test_every_cipher_this_openssl_offers_has_its_number() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    offered = context.get_ciphers()
    assert any(c["protocol"] == "TLSv1.3" for c in offered) and any(c["protocol"] == "TLSv1.2" for c in offered)
    assert all(tls.cipher_suite_number(c["name"]) == c["id"] & 0xFFFF for c in offered)


def test_mtls_required_refuses_a_client_without_certificate(files: ServerFiles, tmp_path: Path) -> None:
    ctx, _ = mtls(files, tmp_path, 2)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    with pytest.raises(ssl.SSLError):
        handshake(ctx, files.client_context())


def test_mtls_refuses_a_certificate_from_another_ca(files: ServerFiles, tmp_path: Path) -> None:
    ctx, _ = mtls(files, tmp_path, 1)
    client_ctx = files.client_context()
    client_cert(trustme.CA()).configure_cert(client_ctx)
    with pytest.raises(ssl.SSLError):
        handshake(ctx, client_ctx)


@pytest.mark.parametrize("reqs", [1, 2])
def test_mtls_client_certificate_in_the_extension(files: ServerFiles, tmp_path: Path, reqs: int) -> None:
    ctx, client_ca = mtls(files, tmp_path, reqs)
    alice = client_cert(client_ca)
    client_ctx = files.client_context()
    alice.configure_cert(client_ctx)
    server, _ = handshake(ctx, client_ctx)
    ext = tls.tls_extension(server, files.leaf_pem)
    leaf_pem = alice.cert_chain_pems[0].bytes().decode()
    assert ext["client_cert_chain"][0] == leaf_pem
    expected = x509.load_pem_x509_certificate(leaf_pem.encode()).subject.rfc4514_string()
    assert ext["client_cert_name"] == expected == "CN=alice,OU=QA,O=Example\\, Inc."
    assert ext["client_cert_error"] is None


def test_mtls_optional_lets_a_client_without_certificate_in(files: ServerFiles, tmp_path: Path) -> None:
    ctx, _ = mtls(files, tmp_path, 1)
    server, _ = handshake(ctx, files.client_context())
    ext = tls.tls_extension(server, None)
    assert ext["client_cert_chain"] == [] and ext["client_cert_name"] is None


@pytest.mark.parametrize(("subject", "expected"), [
    (((("countryName", "FR"),), (("commonName", "a"),)), "CN=a,C=FR"),
    (((("commonName", "a"), ("userId", "7")),), "CN=a+UID=7"),
    (((("commonName", ' #x,y+z"<>;\\ '),),), 'CN=\\ #x\\,y\\+z\\"\\<\\>\\;\\\\\\ '),
    (((("commonName", "#lead"),),), "CN=\\#lead"),
    (((("emailAddress", "a@b"),), (("domainComponent", "org"),)), "DC=org,emailAddress=a@b"),
    (((("commonName", "nul\0"),),), "CN=nul\\00"),
])
def test_rfc4514_name(subject: Any, expected: str) -> None:
    assert tls.rfc4514_name({"subject": subject}) == expected


def test_rfc4514_name_without_subject() -> None:
    assert tls.rfc4514_name({}) is None
    assert tls.rfc4514_name(None) is None


# -- reload ---------------------------------------------------------------------------------------------


def test_reload_serves_the_new_certificate(files: ServerFiles, tmp_path: Path) -> None:
    cfg = config(files)
    ctx = tls.server_context(cfg, ALPN)
    assert ctx is not None
    new = server_files(tmp_path, files.ca, name="new")
    files.cert.write_bytes(new.cert.read_bytes())
    files.key.write_bytes(new.key.read_bytes())
    assert tls.reload_certificates(ctx, cfg)
    _, client = handshake(ctx, files.client_context())
    assert server_cert_of(client) == ssl.PEM_cert_to_DER_cert(new.leaf_pem)
    assert tls.server_cert_pem(cfg) == new.leaf_pem


def test_failed_reload_keeps_the_old_certificate(files: ServerFiles, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(files)
    ctx = tls.server_context(cfg, ALPN)
    assert ctx is not None
    other = server_files(tmp_path, name="other")
    files.cert.write_bytes(other.cert.read_bytes())  # a new certificate with the old key: mismatch
    with caplog.at_level(logging.ERROR, logger="bascule.error"):
        assert not tls.reload_certificates(ctx, cfg)
    assert [r.getMessage() for r in caplog.records] == [
        f"TLS certificates not reloaded, the previous ones keep serving: the private key in {str(files.key)!r} "
        f"does not belong to the certificate in {str(files.cert)!r}: pass the key the certificate was issued for"]
    _, client = handshake(ctx, files.client_context())
    assert server_cert_of(client) == ssl.PEM_cert_to_DER_cert(files.leaf_pem)


def _files_valid(tmp_path: Path, not_before: datetime.datetime, not_after: datetime.datetime) -> ServerFiles:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", not_before=not_before, not_after=not_after)
    cert, key = tmp_path / "dated.pem", tmp_path / "dated.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return ServerFiles(ca, leaf, cert, key)


NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize(("not_before", "not_after", "warning"), [
    (NOW - 10 * DAY, NOW - DAY, "expired on"),
    (NOW + DAY, NOW + 10 * DAY, "is not valid before"),
    (NOW - DAY, NOW + DAY, None),
])
def test_a_certificate_not_valid_now_is_served_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, not_before: datetime.datetime,
        not_after: datetime.datetime, warning: str | None) -> None:
    files = _files_valid(tmp_path, not_before, not_after)
    with caplog.at_level(logging.WARNING, logger="bascule.error"):
        assert tls.server_context(config(files), ALPN) is not None  # served all the same
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warning is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warning in messages[0] and str(files.cert) in messages[0], messages


def test_certificate_validity_matches_an_independent_decoder(files: ServerFiles) -> None:
    parsed = x509.load_pem_x509_certificate(files.leaf_pem.encode())
    der = ssl.PEM_cert_to_DER_cert(files.leaf_pem)
    assert tls.certificate_validity(der) == (parsed.not_valid_before_utc, parsed.not_valid_after_utc)
    with pytest.raises(ValueError):
        tls.certificate_validity(b"\x30\x03\x02\x01\x00")
