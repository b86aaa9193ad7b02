"""Trusted proxies: whom to believe, and what a request looks like once their headers are believed.

Behind nginx, HAProxy or a load balancer, the socket's peer is the proxy, not the browser, and the
proxy's TLS is not ours: without help an app sees ``client: 127.0.0.1`` and ``scheme: http`` and builds
``http://`` links. Proxies say what they saw in headers, but any client can send the same headers, so they
are believed only from peers listed in ``--forwarded-allow-ips``, and only as far as those peers vouch.

Three parts, all pure (no I/O, no logging), so a front door, a protocol or a test can use them alike:

- :class:`TrustedProxies`: the parsed ``--forwarded-allow-ips`` list and the per-connection check. The
  same list decides whom to believe for the PROXY protocol and the uwsgi/FastCGI/SCGI variables.
- :func:`parse_forwarded`, :func:`parse_node` and the small value checks: RFC 7239 ``Forwarded`` and the
  ``X-Forwarded-*`` family, parsed without regular expressions that can backtrack.
- :class:`ProxyHeaders`: the resolution. Given the raw peer, server, scheme and the request's header list,
  it returns an :class:`Effective` (client, scheme, server, Host value, root-path prefix), or None when
  nothing applies; that is also all the work done for an untrusted peer, after one cached check.

The rule for the client: walk the hops from the right (the end the trusted proxy appended to) while they
are trusted proxies themselves; the first one that is not is the client. Everything left of it was written
by that client and proves nothing. uvicorn, given ``*``, takes the leftmost hop: exactly the value the
client chose. gunicorn leaves REMOTE_ADDR at the proxy's address (the client's is lost unless a middleware
digs it out) and answers 400 when two scheme headers disagree, so a client can get its own requests
refused by adding one. Here ``*`` means "believe whichever peer connects" (for containers where the
proxy's address is not known in advance); it does not make the addresses *named in* a header trusted, so
with ``*`` alone the client is the hop the connecting proxy itself appended (the rightmost). Hops are
walked past only when an explicit entry (an address or a range) lists them.

Malformed values never fail a request: a value that cannot be read is ignored and the raw value stays. A
client can therefore only make its own request look as if no proxy header had been sent, never make it
look like it came from someone else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import unquote

from bascule.errors import ConfigError

__all__ = ["DEFAULT_FORWARDED_ALLOW_IPS", "MODES", "Effective", "ProxyHeaders", "TrustedProxies",
           "parse_authority", "parse_forwarded", "parse_node", "parse_prefix"]

DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1,::1"
"""Loopback only: a proxy on the same host (the classic nginx in front) works out of the box, and nothing
reached over the network is believed until the operator says so."""

MODES = ("x-forwarded", "forwarded")
"""The two header families. Never both at once: if a proxy sets one family and passes the other through
untouched, reading both would let a client smuggle values through the family the proxy does not set."""

CACHE_SIZE = 4096
"""Peer and hop strings remembered per :class:`TrustedProxies` (by default). Hop strings come from clients, so
the caches are bounded: when one is full it is emptied (amortised O(1), and a flood of distinct values costs
no more than parsing each once)."""

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
"""RFC 9110 5.6.2 token characters."""

_OBF = frozenset("._-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
"""RFC 7239 6.3: the characters of an obfuscated node name or port after its leading underscore."""

_REG_NAME = frozenset("-._~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
"""Host names accepted from a proxy: RFC 3986 unreserved characters. Sub-delimiters and percent-encoding are
legal in a reg-name but have no business in a DNS name that ends up in URLs an app builds."""

_PCHAR = frozenset("-._~!$&'()*+;=:@/%0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
"""RFC 3986 3.3 path characters (plus ``/`` and ``%`` for pct-encoding), for X-Forwarded-Prefix. No ``,``:
that separates list entries."""

_DIGITS = frozenset("0123456789")
_OWS = " \t"


class TrustedProxies:
    """A parsed ``--forwarded-allow-ips``: addresses, CIDR ranges (IPv4 and IPv6), ``unix``, ``*``.

    Two questions, with different answers for ``*``:

    - :meth:`trusts_peer`: may this connection's peer tell us about the client (proxy headers, a PROXY
      protocol header, uwsgi/FastCGI/SCGI variables)? ``*`` says yes to every peer, ``unix`` to Unix-socket
      peers (whose address is None: a Unix socket peer has none).
    - :meth:`hop`: is an address *named in a header* a proxy we may walk past? Only explicit entries count,
      never ``*`` (see the module docstring: ``*`` must not hand the choice of client to the client).

    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``, what a dual-stack socket reports for an IPv4 peer) is
    matched as the IPv4 address it carries, so listing ``10.0.0.0/8`` covers both forms.
    """

    def __init__(self, spec: str | Iterable[str] = DEFAULT_FORWARDED_ALLOW_IPS, cache_size: int = CACHE_SIZE) -> None:
        """Parse ``spec``: one string of comma-separated entries, or several such strings (a repeated
        option). An empty value trusts nobody. A bad entry raises ConfigError naming it and the fix."""
        self.cache_size = cache_size
        self.everyone = False
        self.unix = False
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        items = [spec] if isinstance(spec, str) else list(spec)
        for item in items:
            for raw in item.split(","):
                entry = raw.strip()
                if not entry:
                    continue
                if entry == "*":
                    self.everyone = True
                elif entry.lower() == "unix":
                    self.unix = True
                else:
                    network = _network(entry)
                    if isinstance(network, ipaddress.IPv4Network):
                        v4.append(network)
                    else:
                        v6.append(network)
        self.v4 = tuple(v4)
        self.v6 = tuple(v6)
        self._peers: dict[str, bool] = {}
        self._hops: dict[str, tuple[str, bool]] = {}

    def __repr__(self) -> str:
        entries = [str(net) for net in self.v4] + [str(net) for net in self.v6]
        if self.unix:
            entries.append("unix")
        if self.everyone:
            entries.append("*")
        return f"TrustedProxies({','.join(entries)!r})"

    def trusts_peer(self, host: str | None) -> bool:
        """Whether the connection's peer (its address as the socket reports it; None for a Unix socket)
        is a trusted proxy. Runs per connection (and per request where the protocol calls it): a cached
        dict lookup after the first sight of an address."""
        if self.everyone:
            return True
        if host is None:
            return self.unix
        known = self._peers.get(host)
        if known is None:
            try:
                known = self._listed(ipaddress.ip_address(host))
            except ValueError:  # not an address at all (a socket family we do not know): not trusted
                known = False
            if len(self._peers) >= self.cache_size:
                self._peers.clear()
            self._peers[host] = known
        return known

    def hop(self, text: str) -> tuple[str, bool] | None:
        """An IP address as a header wrote it (no brackets, no port): its normalised text and whether an
        explicit entry lists it; None if it is not an IP address (a scope id ``%eth0`` included: it means
        nothing on another host). Cached like :meth:`trusts_peer`: it runs per request behind a proxy."""
        known = self._hops.get(text)
        if known is None:
            known = ("", False)  # not an address
            if "%" not in text:
                try:
                    address = ipaddress.ip_address(text)
                except ValueError:
                    pass
                else:
                    known = (address.compressed, self._listed(address))
            if len(self._hops) >= self.cache_size:
                self._hops.clear()
            self._hops[text] = known
        return known if known[0] else None

    def _listed(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is None:
                return any(address in net for net in self.v6)
            address = mapped
        return any(address in net for net in self.v4)


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """One address or CIDR range of --forwarded-allow-ips, or a ConfigError that says what to write."""
    what = "--forwarded-allow-ips"
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError as exc:
        if "/" in entry and "has host bits set" in str(exc):
            loose = ipaddress.ip_network(entry, strict=False)
            raise ConfigError(f"{what}: {entry!r} has host bits set; write the range as {loose}") from None
        raise ConfigError(f"{what}: {entry!r} is not an IP address, a CIDR range, 'unix' or '*' (host names "
                          f"are not resolved: list proxies by address, e.g. 10.0.0.5 or 10.0.0.0/8)") from None


# -- header values -------------------------------------------------------------------------------------


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """The elements of one ``Forwarded`` field line (RFC 7239 section 4), each a dict of lower-cased
    parameter names to values with quoting undone; None if the line does not follow the grammar.

    The grammar, and where it bites: ``forwarded-element *( OWS "," OWS forwarded-element )`` with empty
    elements tolerated (RFC 9110 5.6.1); an element is ``pair *( ";" pair )`` with empty pairs allowed;
    a pair is ``token "=" ( token / quoted-string )``. Parameter names are case-insensitive (section 4),
    values are not. A quoted string may hold ``,`` ``;`` ``=`` and ``\\``-escapes, so splitting on commas
    first (what naive parsers do) cuts ``for="[2001:db8::1]:80"``-style values or lets a quoted comma
    forge an element. A parameter repeated in one element makes the line malformed (section 4: "MUST NOT
    occur more than once per forwarded-element"): taking either copy would be a guess. Whitespace is
    accepted around ``,`` (the list rule) and, leniently, around ``;`` (some proxies write ``; ``), never
    around ``=``.

    A hand-written scanner, one pass, linear in the line's length: no regex, so no backtracking to trap.
    Lines are parsed one by one, not joined first: a line with an unterminated quote cannot then swallow
    the next line, which a trusted proxy appended.
    """
    elements: list[dict[str, str]] = []
    element: dict[str, str] = {}
    pos = 0
    end = len(value)
    while True:
        while pos < end and value[pos] in _OWS:
            pos += 1
        if pos == end:
            break
        char = value[pos]
        if char == ",":
            if element:
                elements.append(element)
                element = {}
            pos += 1
            continue
        if char == ";":
            pos += 1
            continue
        start = pos
        while pos < end and value[pos] in _TCHAR:
            pos += 1
        if pos in (start, end) or value[pos] != "=":
            return None
        name = value[start:pos].lower()
        pos += 1
        if pos < end and value[pos] == '"':
            pos += 1
            parts: list[str] = []
            run = pos
            while True:
                if pos == end:
                    return None  # unterminated quoted string
                char = value[pos]
                if char == '"':
                    break
                if char == "\\":
                    if pos + 1 == end or not _quotable(value[pos + 1]):
                        return None
                    parts.append(value[run:pos])
                    run = pos + 1  # the escaped character starts the next run
                    pos += 2
                    continue
                if not _qdtext(char):
                    return None
                pos += 1
            parts.append(value[run:pos])
            text = "".join(parts)
            pos += 1
        else:
            start = pos
            while pos < end and value[pos] in _TCHAR:
                pos += 1
            if pos == start:
                return None
            text = value[start:pos]
        if name in element:
            return None
        element[name] = text
        while pos < end and value[pos] in _OWS:
            pos += 1
        if pos < end and value[pos] not in ",;":
            return None
    if element:
        elements.append(element)
    return elements


def _qdtext(char: str) -> bool:
    """RFC 9110 5.6.4 qdtext: HTAB, SP, visible ASCII but ``"`` and ``\\``, and obs-text."""
    code = ord(char)
    return code == 9 or (32 <= code <= 126 and code != 34 and code != 92) or 128 <= code <= 255


def _quotable(char: str) -> bool:
    """RFC 9110 5.6.4 quoted-pair: what may follow a backslash (HTAB, SP, VCHAR, obs-text)."""
    code = ord(char)
    return code == 9 or 32 <= code <= 126 or 128 <= code <= 255


def parse_node(text: str, strict: bool = True) -> tuple[str, int] | None:
    """A node (RFC 7239 section 6): ``(ip, port)`` for an address, ``("", 0)`` for ``unknown`` or an
    obfuscated identifier, None if malformed. The IP is returned as written, without brackets; the port is
    0 when absent or obfuscated (ASGI's client is a (host, port) pair and has no "no port").

    ``strict`` follows the RFC's grammar (``Forwarded``): IPv4, ``[IPv6]`` (brackets required, which also
    means the value had to be quoted), ``unknown`` in any case (RFC 5234 literals are case-insensitive),
    ``_obfuscated``, each with an optional ``:port`` or ``:_obfport``. Not strict (``X-Forwarded-For``,
    which has no specification): also a bare IPv6 address (what nginx's ``$remote_addr`` writes), but no
    obfuscated names.
    """
    if not text:
        return None
    port = 0
    if text[0] == "[":
        close = text.find("]")
        if close < 0:
            return None
        host = text[1:close]
        rest = text[close + 1:]
        if ":" not in host:
            return None  # brackets hold IPv6 only (RFC 3986 IP-literal; IPvFuture is not a node)
        if rest:
            if rest[0] != ":":
                return None
            parsed = _node_port(rest[1:], strict)
            if parsed < 0:
                return None
            port = parsed
        return host, port
    colon = text.find(":")
    if colon >= 0:
        if not strict and text.find(":", colon + 1) >= 0:
            return text, 0  # a bare IPv6 address (X-Forwarded-For only); the caller checks it is one
        host = text[:colon]
        parsed = _node_port(text[colon + 1:], strict)
        if parsed < 0:
            return None
        port = parsed
    else:
        host = text
    if host.lower() == "unknown":
        return "", port
    if host[0] == "_":
        if not strict or len(host) == 1 or not all(char in _OBF for char in host[1:]):
            return None
        return "", port
    if ":" in host:
        return None
    return host, port


def _node_port(text: str, strict: bool) -> int:
    """A node port: 1-5 digits up to 65535, or (strict) an obfuscated port (``_`` + name chars) read as 0;
    -1 if malformed."""
    if strict and len(text) > 1 and text[0] == "_" and all(char in _OBF for char in text[1:]):
        return 0
    if not 1 <= len(text) <= 5 or not all(char in _DIGITS for char in text):
        return -1
    port = int(text)
    return port if port <= 65535 else -1


def parse_authority(text: str) -> tuple[str, int | None] | None:
    """A Host value from a proxy (``host[:port]``, RFC 9110 7.2 / RFC 3986 3.2): ``(name, port)``, the name
    without brackets for an IPv6 literal (as sockets report it), the port None when absent; None if
    malformed. Names are limited to unreserved characters and 253 of them (DNS)."""
    if not text or len(text) > 260:
        return None
    port: int | None = None
    if text[0] == "[":
        close = text.find("]")
        if close < 0:
            return None
        name = text[1:close]
        rest = text[close + 1:]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
        if "%" in name:
            return None
    else:
        colon = text.find(":")
        name, rest = (text, "") if colon < 0 else (text[:colon], text[colon:])
        if not name or len(name) > 253 or not all(char in _REG_NAME for char in name):
            return None
    if rest:
        if rest[0] != ":":
            return None
        digits = rest[1:]
        if not 1 <= len(digits) <= 5 or not all(char in _DIGITS for char in digits) or int(digits) > 65535:
            return None
        port = int(digits)
    return name, port


def parse_port(text: str) -> int | None:
    """An X-Forwarded-Port value: 1 to 65535, decimal; None if anything else."""
    if not 1 <= len(text) <= 5 or not all(char in _DIGITS for char in text):
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def parse_prefix(text: str) -> str | None:
    """An X-Forwarded-Prefix value as an ASGI ``root_path`` / WSGI ``SCRIPT_NAME``: ``/a/b`` (percent-decoded,
    UTF-8, no trailing slash; ``/`` alone is the empty prefix); None if malformed.

    It becomes the start of every URL the app builds, so it is held to a path's syntax (RFC 3986 3.3):
    absolute, path characters only, no empty, ``.`` or ``..`` segments (a prefix that climbs out of itself
    is never what a proxy meant), no encoded ``/`` or control characters after decoding.
    """
    if not text or text[0] != "/" or not all(char in _PCHAR for char in text):
        return None
    text = text.rstrip("/")
    if not text:
        return ""
    segments = text[1:].split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            return None
    if "%" not in text:
        return text
    try:
        decoded = unquote(text, errors="strict")
    except UnicodeDecodeError:
        return None
    if decoded.count("/") != text.count("/") or any(ord(char) < 32 or ord(char) == 127 for char in decoded):
        return None
    return decoded


def _scheme(text: str) -> str | None:
    """A proto value as the scheme of an HTTP request: ``http`` or ``https`` (``ws``/``wss`` map to them; the
    caller maps back for WebSocket); anything else is ignored (None). Case-insensitive (RFC 3986 3.1)."""
    lowered = text.strip(_OWS).lower()
    if lowered == "https" or lowered == "wss":
        return "https"
    if lowered == "http" or lowered == "ws":
        return "http"
    return None


# -- resolution ----------------------------------------------------------------------------------------


class Effective:
    """A request as its trusted proxies describe it. Fields left as they were hold the raw values.

    - ``client``: the client's (host, port); port 0 when the proxy gave none; None when the proxy said
      ``unknown`` or gave an obfuscated identifier (RFC 7239 6.2, 6.3: it does not know or will not tell).
    - ``scheme``: ``http`` or ``https`` (a WebSocket caller maps them to ``ws``/``wss``).
    - ``server``: (host, port) the client addressed.
    - ``host``: the Host header value to present to the app instead of the request's, or None to keep it.
    - ``root_path``: the prefix the proxy mounted the server under, or None when it sent none.
    """

    def __init__(self, client: tuple[str, int] | None, scheme: str, server: tuple[str, int] | None,
                 host: bytes | None, root_path: str | None) -> None:
        self.client = client
        self.scheme = scheme
        self.server = server
        self.host = host
        self.root_path = root_path

    def __repr__(self) -> str:
        return (f"Effective(client={self.client!r}, scheme={self.scheme!r}, server={self.server!r}, "
                f"host={self.host!r}, root_path={self.root_path!r})")

    def fields(self) -> tuple[tuple[str, int] | None, str, tuple[str, int] | None, bytes | None, str | None]:
        """The five fields as a tuple (for tests and logs)."""
        return self.client, self.scheme, self.server, self.host, self.root_path


def _pick(entries: list[str], hops: int) -> str:
    """The entry of a comma-list header that belongs with the client: the one as far from the right as
    the client's X-Forwarded-For hop (each proxy appends one entry to each header), or the rightmost when
    the list is shorter (proxies that overwrite the header rather than append to it). Never an entry left
    of that point: those came from the client."""
    return entries[-(hops + 1)] if len(entries) > hops else entries[-1]


def _entries(lines: list[bytes]) -> list[str]:
    """The non-empty, OWS-stripped members of a comma-list header given as field lines in order."""
    out: list[str] = []
    for line in lines:
        for part in line.decode("latin-1").split(","):
            member = part.strip(_OWS)
            if member:
                out.append(member)
    return out


class ProxyHeaders:
    """Resolves one request's proxy headers: the trusted set, the header family, and the opt-ins.

    ``host``, ``port`` and ``prefix`` are opt-in (off by default): a proxy that sets X-Forwarded-For and
    -Proto but passes a client's X-Forwarded-Host through untouched would otherwise let the client choose
    the host an app puts in password-reset links. In ``forwarded`` mode, ``host`` takes the ``host=``
    parameter (with its port); RFC 7239 has no port or prefix parameter, so ``port`` and ``prefix`` apply to
    ``x-forwarded`` mode only (their X- headers are the other family, which this mode never reads).
    """

    def __init__(self, trusted: TrustedProxies, *, mode: str = "x-forwarded", host: bool = False,
                 port: bool = False, prefix: bool = False) -> None:
        if mode not in MODES:
            raise ConfigError(f"proxy headers mode {mode!r} is not one of {', '.join(MODES)}: pick the family "
                              f"your proxy sets (nginx's proxy_set_header lines say which)")
        self.trusted = trusted
        self.forwarded = mode == "forwarded"
        self.host = host
        self.port = port
        self.prefix = prefix

    def resolve(self, client: tuple[str, int] | None, server: tuple[str, int] | None, scheme: str,
                headers: list[tuple[bytes, bytes]]) -> Effective | None:
        """The request as the proxies describe it, or None if nothing applies: the peer is not trusted, or
        it sent none of the mode's headers (then the raw values stand and nothing was allocated).

        ``client``/``server`` are the connection's peer and local address (None over a Unix socket),
        ``scheme`` the raw ``http``/``https``, ``headers`` the request's (lower-case names, in order).
        """
        if not self.trusted.trusts_peer(None if client is None else client[0]):
            return None
        if self.forwarded:
            return self._forwarded(client, server, scheme, headers)
        return self._x_forwarded(client, server, scheme, headers)

    def _forwarded(self, client: tuple[str, int] | None, server: tuple[str, int] | None, scheme: str,
                   headers: list[tuple[bytes, bytes]]) -> Effective | None:
        lines: list[bytes] = []
        for name, value in headers:
            if name == b"forwarded":
                lines.append(value)
        if not lines:
            return None
        chosen: dict[str, str] | None = None
        found: tuple[str, int] | None = client
        trusted = self.trusted
        done = False
        for line in reversed(lines):
            elements = parse_forwarded(line.decode("latin-1"))
            if elements is None:
                return None  # the client's hop may be in it: nothing can be believed
            for element in reversed(elements):
                chosen = element
                node_text = element.get("for")
                if node_text is None:  # not disclosed: the nearest node known (a proxy) stays the client
                    done = True
                    break
                node = parse_node(node_text)
                if node is None:
                    return None
                if not node[0]:  # unknown or obfuscated: the proxy does not know or will not tell
                    found = None
                    done = True
                    break
                hop = trusted.hop(node[0])
                if hop is None:
                    return None  # a dotted or bracketed thing that is not an IP address
                found = (hop[0], node[1])
                if not hop[1]:
                    done = True
                    break
            if done:
                break
        if chosen is None:
            return None  # only empty elements
        new_scheme = scheme
        proto = chosen.get("proto")
        if proto is not None:
            new_scheme = _scheme(proto) or scheme
        new_server = server
        host_value: bytes | None = None
        if self.host:
            text = chosen.get("host")
            authority = None if text is None else parse_authority(text)
            if text is not None and authority is not None:
                new_server = (authority[0], authority[1] or _default_port(new_scheme))
                host_value = text.encode("latin-1")
        return Effective(found, new_scheme, new_server, host_value, None)

    def _x_forwarded(self, client: tuple[str, int] | None, server: tuple[str, int] | None, scheme: str,
                     headers: list[tuple[bytes, bytes]]) -> Effective | None:
        fwd_for: list[bytes] | None = None
        fwd_proto: list[bytes] | None = None
        fwd_host: list[bytes] | None = None
        fwd_port: list[bytes] | None = None
        fwd_prefix: list[bytes] | None = None
        request_host: bytes | None = None
        for name, value in headers:
            size = len(name)
            if size == 4:
                if name == b"host" and request_host is None:
                    request_host = value
                continue
            if size < 15 or size > 18:
                continue
            if name == b"x-forwarded-for":
                if fwd_for is None:
                    fwd_for = [value]
                else:
                    fwd_for.append(value)
            elif name == b"x-forwarded-proto":
                if fwd_proto is None:
                    fwd_proto = [value]
                else:
                    fwd_proto.append(value)
            elif name == b"x-forwarded-host":
                if fwd_host is None:
                    fwd_host = [value]
                else:
                    fwd_host.append(value)
            elif name == b"x-forwarded-port":
                if fwd_port is None:
                    fwd_port = [value]
                else:
                    fwd_port.append(value)
            elif name == b"x-forwarded-prefix":
                if fwd_prefix is None:
                    fwd_prefix = [value]
                else:
                    fwd_prefix.append(value)
        if fwd_for is None and fwd_proto is None and fwd_host is None and fwd_port is None and fwd_prefix is None:
            return None
        found = client
        walked = 0  # trusted hops passed: how far from the right the client's entries sit
        if fwd_for is not None:
            hops = _entries(fwd_for)
            index = len(hops) - 1
            while index >= 0:
                node = parse_node(hops[index], False)
                if node is None:
                    found = client  # malformed: the header is ignored, the raw peer stays
                    walked = 0
                    break
                if not node[0]:  # "unknown" (squid writes it): the proxy does not know the client
                    found = None
                    walked = len(hops) - 1 - index
                    break
                hop = self.trusted.hop(node[0])
                if hop is None:
                    found = client
                    walked = 0
                    break
                if not hop[1] or index == 0:
                    found = (hop[0], node[1])
                    walked = len(hops) - 1 - index
                    break
                index -= 1
        new_scheme = scheme
        if fwd_proto is not None:
            entries = _entries(fwd_proto)
            if entries:
                new_scheme = _scheme(_pick(entries, walked)) or scheme
        new_server = server
        host_value: bytes | None = None
        if self.host and fwd_host is not None:
            entries = _entries(fwd_host)
            if entries:
                text = _pick(entries, walked)
                authority = parse_authority(text)
                if authority is not None:
                    new_server = (authority[0], authority[1] or _default_port(new_scheme))
                    host_value = text.encode("latin-1")
        if self.port and fwd_port is not None:
            entries = _entries(fwd_port)
            port = parse_port(_pick(entries, walked)) if entries else None
            if port is not None:
                if host_value is None and request_host is not None:
                    authority = parse_authority(request_host.decode("latin-1"))
                    if authority is not None:
                        host_value = request_host
                if host_value is not None:
                    authority = parse_authority(host_value.decode("latin-1"))
                    if authority is not None:
                        host_value = _with_port(authority[0], port, new_scheme)
                        new_server = (authority[0], port)
                elif new_server is not None:
                    new_server = (new_server[0], port)
        root_path: str | None = None
        if self.prefix and fwd_prefix is not None:
            entries = _entries(fwd_prefix)
            if entries:
                root_path = parse_prefix(_pick(entries, walked))
        return Effective(found, new_scheme, new_server, host_value, root_path)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _with_port(name: str, port: int, scheme: str) -> bytes:
    """A Host value for ``name`` on ``port``, the port left out when it is the scheme's default (RFC 3986
    6.2.3: the same URL either way, and apps build cleaner links)."""
    text = f"[{name}]" if ":" in name else name
    if port != _default_port(scheme):
        text = f"{text}:{port}"
    return text.encode("latin-1")
