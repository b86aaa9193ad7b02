"""TLS: the server's SSLContext built from the ssl_* options, its certificate reload, and the ASGI ``tls`` facts.

The context is built once per server process (each worker builds its own), before the app starts, so a bad
certificate or password stops the server at once with one line that says what to do, not a traceback from
the middle of OpenSSL. OpenSSL's own messages for these mistakes are all "PEM lib", so the files are read
and checked here first and each mistake gets its own message. A file that cannot be used is a configuration
mistake: :class:`~bascule.errors.ConfigError` (exit code 2), like any other bad option.

Reloading (SIGHUP in a single-process server) loads the files into the *same* context: listeners keep
it, and OpenSSL takes the certificate from the context at each handshake, so new connections get the new
certificate while open ones keep theirs. The files are checked on a scratch context first, so a broken
replacement is logged and the previous certificate keeps serving.

:func:`tls_extension` gathers what the ASGI TLS extension (spec 0.2) reports about one connection; it runs
once per connection (not per request), after the handshake.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
import ssl
from collections.abc import Sequence
from typing import Any

from bascule.config import Config
from bascule.errors import ConfigError

_log = logging.getLogger("bascule.error")

MIN_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
"""ssl_min_version's choices -> the ssl module's versions."""

VERSION_NUMBERS = {"SSLv3": 0x0300, "TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
"""SSLObject.version() names -> the protocol version numbers of the TLS specifications (tls_version)."""

_CERT_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)

# RFC 4514 section 3's short attribute names; other attributes keep OpenSSL's long name (as openssl's
# -nameopt RFC2253 prints them), since the ssl module gives names, not OIDs.
_RDN_SHORT = {"commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST", "organizationName": "O",
              "organizationalUnitName": "OU", "countryName": "C", "streetAddress": "STREET",
              "domainComponent": "DC", "userId": "UID"}


def server_context(config: Config, alpn: Sequence[str]) -> ssl.SSLContext | None:
    """The server's TLS context for ``config``, offering ``alpn`` (best first); None without ssl_certfile.

    Raises ConfigError, with one line naming the file and what to do, when a file is missing or unusable,
    the password is wrong, the key does not match the certificate, or the cipher list selects nothing.
    """
    if config.ssl_certfile is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[config.ssl_min_version]
    if config.ssl_ciphers is not None:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError(f"ssl_ciphers {config.ssl_ciphers!r} selects no cipher OpenSSL knows: write an "
                              f"OpenSSL cipher list such as 'ECDHE+AESGCM:ECDHE+CHACHA20', or leave it unset") from None
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)  # 0, 1, 2 are CERT_NONE, _OPTIONAL, _REQUIRED
    _load_files(context, config)
    context.set_alpn_protocols(list(alpn))
    return context


def server_cert_pem(config: Config) -> str | None:
    """The server's own certificate (the first of ssl_certfile) in PEM, for the ``tls`` extension's server_cert.

    None without TLS, or if the file cannot be read any more (the context holds what was loaded).
    """
    if config.ssl_certfile is None:
        return None
    try:
        with open(config.ssl_certfile, encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    match = _CERT_PEM.search(text)
    return match.group(0).replace("\r\n", "\n") + "\n" if match else None


def reload_certificates(context: ssl.SSLContext, config: Config) -> bool:
    """Load ssl_certfile/ssl_keyfile and ssl_ca_certs again into ``context``; False (logged) if they are unusable.

    New connections get the new certificate; open ones are not touched. The files are tried on a scratch
    context first, so a half-written or mismatched replacement leaves the previous certificate serving.
    Limits of loading into the same context: CA certificates are added to those already trusted (removing
    a CA takes a restart), and a certificate of another key type (RSA after ECDSA) is added beside the old
    one instead of replacing it; with workers, SIGHUP restarts them and neither limit applies.
    """
    try:
        scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        scratch.verify_mode = context.verify_mode
        _load_files(scratch, config)
        _load_files(context, config)
    except ConfigError as exc:
        _log.error("TLS certificates not reloaded, the previous ones keep serving: %s", exc)
        return False
    return True


def _load_files(context: ssl.SSLContext, config: Config) -> None:
    certfile, keyfile = config.ssl_certfile, config.ssl_keyfile
    if certfile is None:
        return
    cert_text = _read("ssl_certfile", certfile)
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ConfigError(f"ssl_certfile {certfile!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----): "
                          f"pass the certificate chain in PEM form")
    warn_if_not_valid_now(certfile, cert_text)
    key_text = cert_text if keyfile is None else _read("ssl_keyfile", keyfile)
    key_source = certfile if keyfile is None else keyfile
    if "PRIVATE KEY-----" not in key_text:
        if keyfile is None:
            raise ConfigError(f"ssl_certfile {certfile!r} holds no private key: add --ssl-keyfile with the key "
                              f"of this certificate")
        raise ConfigError(f"ssl_keyfile {keyfile!r} holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
    encrypted = "ENCRYPTED" in key_text  # PKCS#8 "ENCRYPTED PRIVATE KEY" or a legacy "Proc-Type: 4,ENCRYPTED"
    password = config.ssl_keyfile_password
    if encrypted and password is None:
        raise ConfigError(f"the private key in {key_source!r} is encrypted: set ssl_keyfile_password (best as "
                          f"BASCULE_SSL_KEYFILE_PASSWORD, so it does not show in ps)")
    try:
        # A callable instead of None: OpenSSL would otherwise prompt on the terminal for a password.
        context.load_cert_chain(certfile, keyfile, password if password is not None else _no_password)
    except _PasswordNeeded:
        raise ConfigError(f"the private key in {key_source!r} is encrypted: set ssl_keyfile_password") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"the private key in {key_source!r} does not belong to the certificate in "
                              f"{certfile!r}: pass the key the certificate was issued for") from None
        if encrypted:
            raise ConfigError(f"ssl_keyfile_password does not decrypt the private key in {key_source!r}: check "
                              f"the password") from None
        raise ConfigError(f"cannot load the certificate {certfile!r} with the key {key_source!r}: "
                          f"{_reason(exc)}; check that both are PEM files") from None
    except OSError as exc:  # a file replaced or removed between the checks and the load
        raise ConfigError(f"cannot read the certificate {certfile!r} or key {key_source!r}: "
                          f"{exc.strerror or exc}") from None
    if config.ssl_ca_certs is not None:
        _read("ssl_ca_certs", config.ssl_ca_certs)
        try:
            context.load_verify_locations(cafile=config.ssl_ca_certs)
        except ssl.SSLError as exc:
            raise ConfigError(f"ssl_ca_certs {config.ssl_ca_certs!r} holds no usable PEM CA certificate "
                              f"({_reason(exc)}): pass the CA that issues the client certificates") from None
        except OSError as exc:
            raise ConfigError(f"cannot read ssl_ca_certs {config.ssl_ca_certs!r}: {exc.strerror or exc}") from None


def warn_if_not_valid_now(certfile: str, cert_text: str, now: datetime.datetime | None = None) -> None:
    """Log a warning when the server certificate has expired or is not valid yet.

    Not an error: the operator may be replacing it, and an expired certificate still serves clients told
    to ignore it. But every browser will refuse it, so say so at start and reload, not in the clients' logs.
    """
    match = _CERT_PEM.search(cert_text)
    if match is None:
        return
    try:
        not_before, not_after = certificate_validity(ssl.PEM_cert_to_DER_cert(match.group(0)))
    except (ValueError, IndexError):
        return  # OpenSSL decides whether the certificate loads; this is only a warning
    now = now or datetime.datetime.now(datetime.UTC)
    if now > not_after:
        _log.warning("the certificate in ssl_certfile %r expired on %s: clients will refuse it; renew it",
                     certfile, not_after.isoformat(sep=" "))
    elif now < not_before:
        _log.warning("the certificate in ssl_certfile %r is not valid before %s: clients will refuse it until "
                     "then; check the clock or the certificate", certfile, not_before.isoformat(sep=" "))


def certificate_validity(der: bytes) -> tuple[datetime.datetime, datetime.datetime]:
    """(notBefore, notAfter) of a DER X.509 certificate (RFC 5280 4.1), read without a crypto library.

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
    issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }. Raises ValueError on anything else.
    """
    _, body, _ = _der(der, 0, 0x30)
    _, pos, _ = _der(der, body, 0x30)  # tbsCertificate: walk its fields
    tag = der[pos]
    if tag == 0xA0:  # explicit version
        pos = _der(der, pos, 0xA0)[2]
    for expected in (0x02, 0x30, 0x30):  # serialNumber, signature, issuer
        pos = _der(der, pos, expected)[2]
    _, validity, _ = _der(der, pos, 0x30)
    before_start, before_end = _der_any_time(der, validity)
    after_start, after_end = _der_any_time(der, before_end)
    return _der_time(der, validity, before_start, before_end), _der_time(der, before_end, after_start, after_end)


def _der(der: bytes, pos: int, tag: int) -> tuple[int, int, int]:
    """The element at ``pos`` (which must have ``tag``): (its start, its content's start, its end)."""
    if der[pos] != tag:
        raise ValueError(f"DER tag {der[pos]:#x} where {tag:#x} was expected")
    length = der[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[start:start + count], "big")
        start += count
    end = start + length
    if end > len(der):
        raise ValueError("DER element runs past the end")
    return pos, start, end


def _der_any_time(der: bytes, pos: int) -> tuple[int, int]:
    tag = der[pos]
    if tag not in (0x17, 0x18):
        raise ValueError("validity time is neither UTCTime nor GeneralizedTime")
    _, start, end = _der(der, pos, tag)
    return start, end


def _der_time(der: bytes, tag_pos: int, start: int, end: int) -> datetime.datetime:
    text = der[start:end].decode("ascii")
    if der[tag_pos] == 0x17:  # UTCTime: two-digit years, 50-99 are 19xx (RFC 5280 4.1.2.5.1)
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    return datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=datetime.UTC)


class _PasswordNeeded(Exception):
    pass


def _no_password() -> str:
    raise _PasswordNeeded


def _read(name: str, path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {name} {path!r}: {exc.strerror or exc}; check the path and its "
                          f"permissions") from None


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).replace("_", " ").lower()


# -- the ASGI tls extension -----------------------------------------------------------------------------


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket, server_cert: str | None) -> dict[str, Any]:
    """The ASGI ``tls`` extension's dict for one connection, from its (handshaken) ssl.SSLObject.

    ``client_cert_chain`` is the chain the client sent when the ssl module can give it (Python 3.13+);
    before that only its own certificate. ``client_cert_error`` is always None: a certificate that fails
    verification fails the handshake, so no request ever carries one.
    """
    version = ssl_object.version()
    cipher = ssl_object.cipher()
    chain: list[str] = []
    name: str | None = None
    leaf = ssl_object.getpeercert(binary_form=True)
    if leaf is not None:
        chain = _peer_chain(ssl_object, leaf)
        name = rfc4514_name(ssl_object.getpeercert())
    return tls_facts(server_cert, chain, name, VERSION_NUMBERS.get(version) if version is not None else None,
                     cipher_suite_number(cipher[0]) if cipher is not None else None)


def tls_facts(server_cert: str | None, client_chain: list[str], client_name: str | None, version: int | None,
              cipher_suite: int | None) -> dict[str, Any]:
    """The ASGI ``tls`` extension's dict, whoever terminated the TLS (the ssl module here, QUIC's own TLS 1.3
    in bascule.listen.quic): one shape for both."""
    return {
        "server_cert": server_cert,
        "client_cert_chain": client_chain,
        "client_cert_name": client_name,
        "client_cert_error": None,
        "tls_version": version,
        "cipher_suite": cipher_suite,
    }


def pem_certificates(text: str) -> list[str]:
    """The PEM certificates in ``text``, in order (a chain file may also hold its key, or comments)."""
    return [match.replace("\r\n", "\n") + "\n" for match in _CERT_PEM.findall(text)]


def _peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket, leaf: bytes) -> list[str]:
    """The chain the client sent, its own certificate first: all of it on Python 3.13+, else that one."""
    unverified = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+: DER bytes, as sent
    if unverified is not None:
        certs = list(unverified() or ())
        if certs and all(isinstance(c, bytes) for c in certs):
            if certs[0] != leaf:  # OpenSSL leaves the peer's own certificate out on the server side
                certs.insert(0, leaf)
            return [ssl.DER_cert_to_PEM_cert(c) for c in certs]
    return [ssl.DER_cert_to_PEM_cert(leaf)]


def rfc4514_name(peercert: dict[str, Any] | None) -> str | None:
    """A certificate's subject as an RFC 4514 string ('CN=alice,O=Example'), from SSLObject.getpeercert().

    RFC 4514 writes the relative distinguished names last-first and escapes , + " \\ < > ; (and a leading
    '#' or space, a trailing space) with a backslash.
    """
    subject = (peercert or {}).get("subject")
    if not subject:
        return None
    return ",".join("+".join(f"{_RDN_SHORT.get(attr, attr)}={_escape(value)}" for attr, value in rdn)
                    for rdn in reversed(subject))


def _escape(value: str) -> str:
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch in '"+,;<>\\' or (ch == "#" and i == 0) or (ch == " " and i in (0, last)):
            out.append("\\" + ch)
        elif ch == "\0":
            out.append("\\00")
        else:
            out.append(ch)
    return "".join(out)


TLS13_SUITES = {"TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302,
                "TLS_CHACHA20_POLY1305_SHA256": 0x1303, "TLS_AES_128_CCM_SHA256": 0x1304,
                "TLS_AES_128_CCM_8_SHA256": 0x1305}
"""TLS 1.3's cipher suites (RFC 8446 B.4), which OpenSSL names as IANA does: known even where this OpenSSL does
not enable them (the CCM ones are off by default, but a proxy's OpenSSL may have negotiated one)."""


def cipher_suite_number(name: str) -> int | None:
    """The ASGI ``tls`` extension's ``cipher_suite`` (the IANA number) for an OpenSSL cipher name, such as
    ssl.SSLObject.cipher() and HAProxy's PROXY v2 SSL_CIPHER TLV give ('ECDHE-RSA-AES128-GCM-SHA256' -> 0xC02F,
    'TLS_AES_256_GCM_SHA384' -> 0x1302); None for a name this OpenSSL does not know. One table for TLS bascule
    terminates and TLS a proxy terminated, so both report the same number for the same suite."""
    return _cipher_ids().get(name)


@functools.cache
def _cipher_ids() -> dict[str, int]:
    """OpenSSL cipher names -> IANA cipher suite numbers (the low 16 bits of OpenSSL's id), built once, at the
    first TLS connection (about 3 ms: a server without TLS never pays it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return TLS13_SUITES | {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}
