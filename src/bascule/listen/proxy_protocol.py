"""The PROXY protocol (HAProxy's, versions 1 and 2), sans I/O: bytes in, a header record (or "need more") out.

A TCP proxy that does not speak HTTP (HAProxy in ``mode tcp``, an AWS NLB, a TLS terminator such as
stunnel) cannot add X-Forwarded-For; it prepends one PROXY header to the connection instead, saying who
connected to it and to which address, and in version 2 what TLS it terminated. The header comes first on
the connection, before TLS, before the first HTTP byte.

Model: websockets' sans-I/O protocols. :func:`parse` takes the bytes received so far and returns the
:class:`ProxyHeader` and how many bytes it used, or None when more bytes are needed; :class:`ProxyHeaderReader`
does the buffering for a caller that gets data in pieces and hands back the bytes after the header (the
start of the next protocol, often TLS or HTTP in the same segment). Nothing here reads a socket, starts a
timer or logs: the caller does, which is what lets the tests feed raw bytes one at a time.

What the caller (the front door, ``listen/accept.py``) must do, because the parser cannot:

- check the sender first: the header is believed only from a peer that ``TrustedProxies.trusts_peer``
  accepts; any other peer is refused without reading (it could claim any address);
- enforce a deadline (3 s): a sender that never finishes its header must not hold a connection open;
- require the header on a listener configured for it and never guess (the spec's section 2: "the receiver
  MUST NOT try to guess whether the protocol header is present"; guessing lets any client spoof);
- on :class:`ProxyProtocolError`, log the message with the peer and close the connection (the spec asks
  for an abort, so the sender notices), and call no app;
- use the real endpoints when :attr:`ProxyHeader.source` is None (LOCAL health checks, UNKNOWN, UNSPEC).

Strictness follows the spec (doc/proxy-protocol.txt in HAProxy's tree): a v1 line is exact US-ASCII with
single spaces, canonical addresses and ports without leading zeros, CRLF within 107 bytes and never a bare
CR or LF; a v2 header has the 12-byte signature, version 2, a known command, family and transport, an
address block as long as its family needs, TLVs that fit inside the header (SSL sub-TLVs inside the SSL
TLV), and a CRC32C that matches when one is sent. Anything else is an error, raised as early as the bytes
already received allow (a plain HTTP request is refused at its first byte, not after 107).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from bascule.errors import BasculeError
from bascule.protocols.prefix import PrefixReader

__all__ = ["DEFAULT_MAX_LENGTH", "HEADER_TIMEOUT", "V1_MAX_LENGTH", "V2_SIGNATURE", "ProxyHeader", "ProxyHeaderReader",
           "ProxyProtocolError", "SSLInfo", "crc32c", "parse"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12 bytes that open a version 2 header (chosen to be rejected early by most other protocols)."""

V1_PREFIX = b"PROXY "

V1_MAX_LENGTH = 107
"""The longest v1 line, CRLF included (``PROXY UNKNOWN`` with two full IPv6 addresses and ports)."""

DEFAULT_MAX_LENGTH = 4096
"""Bound on a v2 header (16 bytes + its declared length, which may claim up to 64 KiB). Addresses and the
usual TLVs take a few hundred bytes; HAProxy's SSL TLV with the client certificate in DER
(PP2_SUBTYPE_SSL_CLIENT_CERT) is the large case, ~1-2 KiB. A sender claiming more is refused as soon as the
first 16 bytes arrive, so a peer cannot make us buffer 64 KiB per connection."""

HEADER_TIMEOUT = 3.0
"""Seconds a sender has for its whole header from accept (HAProxy sends it in its first segment; a peer that
does not is broken or hostile, and must not hold the connection). ServerContext.proxy_header_timeout."""

LOCAL = "LOCAL"
PROXY = "PROXY"

_FAMILIES = ("UNSPEC", "INET", "INET6", "UNIX")
_TRANSPORTS = ("UNSPEC", "STREAM", "DGRAM")
_ADDRESS_LENGTHS = (0, 12, 36, 216)  # per family: the address block's size (2 addresses, then 2 ports for INET*)

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_SUBTYPE_SSL_GROUP = 0x26
PP2_SUBTYPE_SSL_SIG_SCHEME = 0x27
PP2_SUBTYPE_SSL_CLIENT_CERT = 0x28
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

_AUTHORITY_MAX = 255  # a host name (SNI); HAProxy refuses longer ones too
_UNIQUE_ID_MAX = 128  # the spec: "up to 128 bytes"
_SINGLE = frozenset((PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_UNIQUE_ID, PP2_TYPE_SSL))
"""TLVs that carry one fact each: a second copy is an error, since believing either one would be a guess."""

_SSL_TEXT = {PP2_SUBTYPE_SSL_VERSION: "version", PP2_SUBTYPE_SSL_CIPHER: "cipher",
             PP2_SUBTYPE_SSL_SIG_ALG: "sig_alg", PP2_SUBTYPE_SSL_KEY_ALG: "key_alg",
             PP2_SUBTYPE_SSL_GROUP: "group", PP2_SUBTYPE_SSL_SIG_SCHEME: "sig_scheme"}
"""SSL sub-TLVs whose value is a US-ASCII name, by the SSLInfo field they fill."""


class ProxyProtocolError(BasculeError):
    """The PROXY header is missing, malformed or too long. The message is one log line's worth: what was
    wrong. The connection must be closed (spec, section 2: abort so the sender notices)."""


@dataclass(frozen=True, slots=True)
class SSLInfo:
    """What the proxy says about the TLS it terminated (PP2_TYPE_SSL and its sub-TLVs).

    ``client`` is the bit field (PP2_CLIENT_SSL, _CERT_CONN, _CERT_SESS), ``verify`` 0 when the client
    presented a certificate that verified. The names are the proxy's own (OpenSSL's, for HAProxy).
    """

    client: int
    verify: int
    version: str | None = None
    cipher: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None
    group: str | None = None
    sig_scheme: str | None = None
    common_name: str | None = None
    client_cert: bytes | None = None

    @property
    def ssl(self) -> bool:
        """The client connected over TLS (PP2_CLIENT_SSL)."""
        return bool(self.client & PP2_CLIENT_SSL)

    @property
    def cert_verified(self) -> bool:
        """The client presented a certificate on this connection or session, and it verified."""
        return bool(self.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS)) and self.verify == 0


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed PROXY header.

    ``source``/``destination`` are the (ip, port) of the client and of the address it connected to, or
    None when the real connection's endpoints are to be used: a LOCAL command (the proxy's own health
    check), v1 UNKNOWN, an UNSPEC family or transport, a UNIX family (``source_path``/``destination_path``
    then hold the socket paths, up to their first NUL), or a DGRAM transport (a datagram header on a stream
    connection: the spec lets receivers fall back to UNSPEC for what they do not support).
    """

    version: int
    command: str  # PROXY or LOCAL
    family: str  # UNSPEC, INET, INET6, UNIX (v1's TCP4/TCP6/UNKNOWN map to INET/INET6/UNSPEC)
    transport: str  # UNSPEC, STREAM, DGRAM
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes of the connection the header took
    source_path: bytes | None = None
    destination_path: bytes | None = None
    alpn: bytes | None = None
    authority: str | None = None
    unique_id: bytes | None = None
    ssl: SSLInfo | None = None
    crc32c_checked: bool = False
    other_tlvs: tuple[tuple[int, bytes], ...] = field(default=())
    """TLVs this module does not interpret (NETNS, the custom range 0xE0-0xEF that cloud load balancers
    use for endpoint ids), as (type, value) in order; NOOP is dropped."""

    @property
    def tls(self) -> bool:
        """The client's connection to the proxy was TLS: the request's scheme is https (wss)."""
        return self.ssl is not None and self.ssl.ssl


def parse(data: bytes | bytearray, max_length: int = DEFAULT_MAX_LENGTH) -> tuple[ProxyHeader, int] | None:
    """The header at the start of ``data`` and its length in bytes, or None if ``data`` is a valid start
    of a header that is not complete yet. Raises ProxyProtocolError as soon as ``data`` cannot be the start
    of one. Never looks past ``data`` nor, once complete, past the header: ``data[length:]`` is the next
    protocol's."""
    size = len(data)
    if not size:
        return None
    first = data[0]
    if first == 0x0D:
        return _parse_v2(data, max_length)
    if first == 0x50:  # "P"
        return _parse_v1(data)
    raise ProxyProtocolError(f"no PROXY protocol header (the connection starts with {bytes(data[:8])!r}): this "
                             f"listener requires one; is the proxy sending it (HAProxy: send-proxy)?")


class ProxyHeaderReader(PrefixReader[ProxyHeader]):
    """Buffers a connection's first bytes until the header is complete (protocols/prefix.py; see the module
    docstring for what the caller adds: the trusted-sender check and the deadline).

    ``feed`` returns None while more bytes are needed and the header once complete; :attr:`leftover` then
    holds the bytes received after it, to be handed to the next protocol (TLS or HTTP). Buffered bytes are
    bounded by ``max_length`` (v2) and 107 (v1): past those the header is refused, not buffered.
    """

    __slots__ = ()

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        super().__init__(lambda data: parse(data, max_length), "the PROXY header")

    @property
    def header(self) -> ProxyHeader | None:
        return self.head


def _parse_v1(data: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    size = len(data)
    prefix = min(size, len(V1_PREFIX))
    if data[:prefix] != V1_PREFIX[:prefix]:
        raise ProxyProtocolError(f"no PROXY protocol header (the connection starts with {bytes(data[:8])!r}): "
                                 f"this listener requires one; is the proxy sending it (HAProxy: send-proxy)?")
    end = data.find(b"\n", 0, V1_MAX_LENGTH)
    if end < 0:
        cr = data.find(b"\r", 0, V1_MAX_LENGTH)
        if 0 <= cr < size - 1:
            raise ProxyProtocolError("PROXY v1 line has a bare CR")
        if size >= V1_MAX_LENGTH:
            raise ProxyProtocolError(f"PROXY v1 line has no CRLF in its first {V1_MAX_LENGTH} bytes")
        return None
    if data[end - 1] != 0x0D:
        raise ProxyProtocolError("PROXY v1 line ends with a bare LF (CRLF required)")
    try:
        line = bytes(data[len(V1_PREFIX):end - 1]).decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not US-ASCII") from None
    length = end + 1
    parts = line.split(" ")
    if parts[0] == "UNKNOWN":  # the rest of the line is to be ignored (spec 2.1)
        if "\r" in line:
            raise ProxyProtocolError("PROXY v1 line has a bare CR")
        return ProxyHeader(1, PROXY, "UNSPEC", "UNSPEC", None, None, length), length
    if parts[0] == "TCP4":
        family = "INET"
    elif parts[0] == "TCP6":
        family = "INET6"
    else:
        raise ProxyProtocolError(f"PROXY v1 protocol {parts[0][:16]!r} is not TCP4, TCP6 or UNKNOWN")
    if len(parts) != 5:
        raise ProxyProtocolError("PROXY v1 line does not have 4 fields after the protocol, one space apart")
    source = _v1_address(parts[1], family)
    destination = _v1_address(parts[2], family)
    header = ProxyHeader(1, PROXY, family, "STREAM", (source, _v1_port(parts[3])),
                         (destination, _v1_port(parts[4])), length)
    return header, length


def _v1_address(text: str, family: str) -> str:
    """A v1 address in the family's canonical form (spec 2.1: dotted quad without leading zeros; IPv6 in
    hex groups with at most one ``::``), as ``ipaddress`` spells it."""
    try:
        if family == "INET":
            if not text or not all(char in "0123456789." for char in text):
                raise ValueError(text)
            return str(ipaddress.IPv4Address(text))  # refuses leading zeros (octal confusion)
        if "%" in text or not text:  # a scope id means nothing on this host
            raise ValueError(text)
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        name = "IPv4" if family == "INET" else "IPv6"
        raise ProxyProtocolError(f"PROXY v1 address {text[:40]!r} is not a valid {name} address") from None


def _v1_port(text: str) -> int:
    """A v1 port: decimal, 0-65535, no leading zeros (spec 2.1)."""
    if (not text or len(text) > 5 or not all(char in "0123456789" for char in text)
            or (text[0] == "0" and text != "0") or int(text) > 65535):
        raise ProxyProtocolError(f"PROXY v1 port {text[:8]!r} is not a decimal 0-65535 without leading zeros")
    return int(text)


# -- version 2 -----------------------------------------------------------------------------------------


def _parse_v2(data: bytes | bytearray, max_length: int) -> tuple[ProxyHeader, int] | None:
    size = len(data)
    prefix = min(size, len(V2_SIGNATURE))
    if data[:prefix] != V2_SIGNATURE[:prefix]:
        raise ProxyProtocolError("no PROXY protocol header (the bytes are not the v2 signature): this listener "
                                 "requires one; is the proxy sending it (HAProxy: send-proxy-v2)?")
    if size < 16:
        if size > 12 and data[12] >> 4 != 2:
            raise ProxyProtocolError(f"PROXY v2 header has version {data[12] >> 4} (only 2 exists)")
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"PROXY v2 header has version {version} (only 2 exists)")
    if command > 1:
        raise ProxyProtocolError(f"PROXY v2 header has command {command} (only LOCAL 0 and PROXY 1 exist)")
    family, transport = data[13] >> 4, data[13] & 0x0F
    if family > 3:
        raise ProxyProtocolError(f"PROXY v2 header has address family {family} (only UNSPEC, INET, INET6 and "
                                 f"UNIX exist)")
    if transport > 2:
        raise ProxyProtocolError(f"PROXY v2 header has transport {transport} (only UNSPEC, STREAM and DGRAM exist)")
    length = 16 + ((data[14] << 8) | data[15])
    if length > max_length:
        raise ProxyProtocolError(f"PROXY v2 header of {length} bytes is over the limit of {max_length}")
    if size < length:
        return None
    address_length = _ADDRESS_LENGTHS[family]
    is_proxy = command == 1
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    source_path = destination_path = None
    tlv_start = 16 + address_length
    if tlv_start > length:
        if is_proxy:
            raise ProxyProtocolError(f"PROXY v2 address block of {length - 16} bytes is shorter than the "
                                     f"{address_length} its family ({_FAMILIES[family]}) needs")
        tlv_start = length  # LOCAL: the family is to be ignored, and so is whatever the block holds
    elif is_proxy and transport == 1:
        if family == 1:
            source = (str(ipaddress.IPv4Address(bytes(data[16:20]))), (data[24] << 8) | data[25])
            destination = (str(ipaddress.IPv4Address(bytes(data[20:24]))), (data[26] << 8) | data[27])
        elif family == 2:
            source = (str(ipaddress.IPv6Address(bytes(data[16:32]))), (data[48] << 8) | data[49])
            destination = (str(ipaddress.IPv6Address(bytes(data[32:48]))), (data[50] << 8) | data[51])
        elif family == 3:
            source_path = bytes(data[16:124]).split(b"\0", 1)[0]
            destination_path = bytes(data[124:232]).split(b"\0", 1)[0]
    facts = _Facts()
    _read_tlvs(data, tlv_start, length, facts)
    header = ProxyHeader(2, PROXY if is_proxy else LOCAL, _FAMILIES[family], _TRANSPORTS[transport], source,
                         destination, length, source_path, destination_path, facts.alpn, facts.authority,
                         facts.unique_id, facts.ssl, facts.crc32c_checked, tuple(facts.other))
    return header, length


class _Facts:
    """What the TLVs said, gathered while walking them."""

    def __init__(self) -> None:
        self.alpn: bytes | None = None
        self.authority: str | None = None
        self.unique_id: bytes | None = None
        self.ssl: SSLInfo | None = None
        self.crc32c_checked = False
        self.other: list[tuple[int, bytes]] = []
        self.seen: set[int] = set()


def _read_tlvs(data: bytes | bytearray, start: int, end: int, facts: _Facts) -> None:
    """Walk the TLVs in ``data[start:end]`` (spec 2.2: type, 2-byte length, value), each within ``end``."""
    pos = start
    while pos < end:
        if pos + 3 > end:
            raise ProxyProtocolError(f"PROXY v2 TLV header at byte {pos} is cut off by the end of the header")
        kind = data[pos]
        value_end = pos + 3 + ((data[pos + 1] << 8) | data[pos + 2])
        if value_end > end:
            raise ProxyProtocolError(f"PROXY v2 TLV 0x{kind:02x} of {value_end - pos - 3} bytes overflows the "
                                     f"header by {value_end - end}")
        value = bytes(data[pos + 3:value_end])
        if kind in _SINGLE:
            if kind in facts.seen:
                raise ProxyProtocolError(f"PROXY v2 header has TLV 0x{kind:02x} twice")
            facts.seen.add(kind)
        if kind == PP2_TYPE_CRC32C:
            if len(value) != 4:
                raise ProxyProtocolError(f"PROXY v2 CRC32C TLV has {len(value)} bytes, not 4")
            # the checksum is computed over the whole header with its own 4 bytes as zeros (spec 2.2.3)
            computed = crc32c(bytes(data[value_end:end]), crc32c(b"\0\0\0\0", crc32c(bytes(data[:pos + 3]))))
            if computed != int.from_bytes(value, "big"):
                raise ProxyProtocolError(f"PROXY v2 header fails its CRC32C check (sent {value.hex()}, "
                                         f"computed {computed:08x}): it was corrupted on the way")
            facts.crc32c_checked = True
        elif kind == PP2_TYPE_ALPN:
            facts.alpn = value
        elif kind == PP2_TYPE_AUTHORITY:
            if len(value) > _AUTHORITY_MAX:
                raise ProxyProtocolError(f"PROXY v2 AUTHORITY TLV of {len(value)} bytes is over {_AUTHORITY_MAX}")
            facts.authority = _text(value, "utf-8", "AUTHORITY")
        elif kind == PP2_TYPE_UNIQUE_ID:
            if len(value) > _UNIQUE_ID_MAX:
                raise ProxyProtocolError(f"PROXY v2 UNIQUE_ID TLV of {len(value)} bytes is over {_UNIQUE_ID_MAX}")
            facts.unique_id = value
        elif kind == PP2_TYPE_SSL:
            facts.ssl = _ssl_info(value)
        elif kind != PP2_TYPE_NOOP:
            facts.other.append((kind, value))
        pos = value_end


def _ssl_info(value: bytes) -> SSLInfo:
    """The SSL TLV (spec 2.2.6): a client bit field, a 4-byte verify result, then sub-TLVs that must fit in
    it (a sub-TLV running past its parent would be read from the next TLV's bytes)."""
    if len(value) < 5:
        raise ProxyProtocolError(f"PROXY v2 SSL TLV has {len(value)} bytes, fewer than its fixed 5")
    fields: dict[str, str] = {}
    common_name: str | None = None
    client_cert: bytes | None = None
    seen: set[int] = set()
    pos = 5
    end = len(value)
    while pos < end:
        if pos + 3 > end:
            raise ProxyProtocolError("PROXY v2 SSL sub-TLV header is cut off by the end of the SSL TLV")
        kind = value[pos]
        value_end = pos + 3 + ((value[pos + 1] << 8) | value[pos + 2])
        if value_end > end:
            raise ProxyProtocolError(f"PROXY v2 SSL sub-TLV 0x{kind:02x} overflows the SSL TLV by {value_end - end}")
        if kind in seen:
            raise ProxyProtocolError(f"PROXY v2 SSL TLV has sub-TLV 0x{kind:02x} twice")
        seen.add(kind)
        sub = value[pos + 3:value_end]
        name = _SSL_TEXT.get(kind)
        if name is not None:
            fields[name] = _text(sub, "ascii", f"SSL sub-TLV 0x{kind:02x}")
        elif kind == PP2_SUBTYPE_SSL_CN:
            common_name = _text(sub, "utf-8", "SSL CN")
        elif kind == PP2_SUBTYPE_SSL_CLIENT_CERT:
            client_cert = sub
        pos = value_end
    return SSLInfo(value[0], int.from_bytes(value[1:5], "big"), fields.get("version"), fields.get("cipher"),
                   fields.get("sig_alg"), fields.get("key_alg"), fields.get("group"), fields.get("sig_scheme"),
                   common_name, client_cert)


def _text(value: bytes, encoding: str, what: str) -> str:
    try:
        return value.decode(encoding)
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"PROXY v2 {what} TLV is not {encoding.upper()}") from None


# -- CRC32C ----------------------------------------------------------------------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli, the polynomial of iSCSI and SCTP: RFC 4960 appendix B), continuing from ``crc``.

    Pure Python with a 256-entry table: neither the standard library (zlib's CRC-32 is the other polynomial)
    nor bascule's dependencies provide it, and it runs only on headers that carry the TLV, a few hundred
    bytes each (well under a millisecond).
    """
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
