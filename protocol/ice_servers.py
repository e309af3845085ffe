"""ICE servers: their URLs, their credentials, and how they travel to a peer.

Pure: no aiortc, no I/O, so every rule here is checked in microseconds.

- URLs (RFC 7064, RFC 7065): ``stun:host[:port]``, ``turn:host[:port][?transport=udp|tcp]``
  and ``turns:host[:port][?transport=tcp]``.
- Static credentials (``--ice-username``, ``--ice-credential``) or ephemeral
  ones minted from coturn's ``use-auth-secret`` shared secret (the "TURN REST
  API", draft-uberti-behave-turn-rest): username ``"<unix expiry>:<id>"``,
  credential ``base64(HMAC-SHA1(secret, username))``. Whoever holds the secret
  can mint them; a browser only ever sees one that expires.
- WHEP and WHIP (RFC 9725, section 4.6) hand them to a player in ``Link``
  headers: ``<turn:...>; rel="ice-server"; username="..."; credential="...";
  credential-type="password"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

SCHEMES = ("stun", "turn", "turns")
DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "turns": 5349}
TRANSPORT_POLICIES = ("all", "relay")

#: How long minted credentials stay valid. The relay checks them on every
#: allocation refresh (every few minutes), so they must outlive the longest
#: session; a day is the TURN REST API draft's own example.
DEFAULT_CREDENTIAL_TTL_S = 24 * 3600

#: The Link relation that names an ICE server (RFC 9725).
ICE_SERVER_REL = "ice-server"

_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")


@dataclass(frozen=True)
class IceUrl:
    """One parsed ``stun:``, ``turn:`` or ``turns:`` URL."""

    scheme: str
    host: str
    port: int
    #: udp or tcp for turn (default udp), tcp for turns; None for stun.
    transport: Optional[str]

    @property
    def is_turn(self) -> bool:
        return self.scheme != "stun"

    @property
    def relay_transport(self) -> Optional[str]:
        """How a peer reaches this relay: udp, tcp or tls (None for STUN)."""
        if not self.is_turn:
            return None
        return "tls" if self.scheme == "turns" else self.transport

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.scheme}:{host}:{self.port}"
        if self.is_turn:
            text += f"?transport={self.transport}"
        return text


def parse_ice_url(text: str) -> IceUrl:
    """Parse one ICE server URL; ``ValueError`` says what is wrong with it."""
    original = text
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in SCHEMES:
        raise ValueError(f"{original!r}: an ICE server URL starts with stun:, turn: or turns:")
    if rest.startswith("//"):
        raise ValueError(f"{original!r}: no // after {scheme}: (RFC 7064: {scheme}:host:port)")
    address, question, query = rest.partition("?")
    match = _HOST_PORT.fullmatch(address)
    if match is None:
        raise ValueError(f"{original!r}: expected {scheme}:host[:port]")
    host = match.group("host").strip("[]")
    if match.group("host").startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{original!r}: {host!r} is not an IPv6 address") from None
    port = int(match.group("port")) if match.group("port") else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise ValueError(f"{original!r}: port must be 1-65535")
    transport: Optional[str] = None
    if question:
        if scheme == "stun":
            raise ValueError(f"{original!r}: a stun: URL takes no ?transport (RFC 7064)")
        key, equals, value = query.partition("=")
        if key.lower() != "transport" or not equals or value.lower() not in ("udp", "tcp"):
            raise ValueError(f"{original!r}: the only query is ?transport=udp or ?transport=tcp")
        transport = value.lower()
    if scheme == "turn":
        transport = transport or "udp"
    elif scheme == "turns":
        if transport == "udp":
            raise ValueError(f"{original!r}: turns: runs over TLS, so ?transport=tcp only")
        transport = "tcp"
    return IceUrl(scheme, host, port, transport)


def ice_url_list(text: str) -> list[IceUrl]:
    """URLs separated by commas or white space (one flag or environment variable)."""
    return [parse_ice_url(part) for part in re.split(r"[\s,]+", text.strip()) if part]


@dataclass(frozen=True)
class IceServer:
    """What a peer connection is configured with: W3C's ``RTCIceServer``."""

    urls: tuple[str, ...]
    username: Optional[str] = None
    credential: Optional[str] = None

    def as_json(self) -> dict[str, Any]:
        """The dictionary ``new RTCPeerConnection({iceServers: [...]})`` takes."""
        entry: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            entry["username"] = self.username
        if self.credential is not None:
            entry["credential"] = self.credential
        return entry


def turn_rest_credentials(secret: str, expires_at: int, user_id: str) -> tuple[str, str]:
    """coturn's ``use-auth-secret`` credentials: (username, credential).

    The user id may not contain the separator: coturn splits the timestamp off at it.
    """
    username = f"{int(expires_at)}:{user_id.replace(':', '-')}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class IceSettings:
    """One side's ICE configuration, as its flags give it."""

    urls: tuple[IceUrl, ...] = ()
    username: Optional[str] = None
    credential: Optional[str] = None
    turn_secret: Optional[str] = None
    transport_policy: str = "all"
    credential_ttl_s: int = DEFAULT_CREDENTIAL_TTL_S

    @property
    def turn_urls(self) -> tuple[IceUrl, ...]:
        return tuple(url for url in self.urls if url.is_turn)

    def problem(self, flag: str = "--ice-server") -> Optional[str]:
        """Why these settings cannot work, for a usage error; None if they can."""
        if self.transport_policy not in TRANSPORT_POLICIES:
            return f"--ice-transport-policy must be one of {', '.join(TRANSPORT_POLICIES)}"
        if self.turn_secret is not None and (self.username or self.credential):
            return "--turn-secret mints the credentials: drop --ice-username/--ice-credential"
        if (self.username is None) != (self.credential is None):
            return "--ice-username and --ice-credential go together"
        if self.turn_secret == "":
            return "--turn-secret must not be empty"
        if self.turn_urls and self.turn_secret is None and self.username is None:
            return (
                f"{flag} {self.turn_urls[0]} needs credentials: --turn-secret, "
                "or --ice-username and --ice-credential"
            )
        if self.transport_policy == "relay" and not self.turn_urls:
            return f"--ice-transport-policy relay needs a TURN server ({flag} turn:...)"
        return None

    def servers(self, user_id: str, now: float) -> list[IceServer]:
        """The ICE servers for one peer, with credentials minted now when there is a secret.

        Each STUN URL is a server of its own; the TURN URLs share one set of
        credentials, so they form one server (one allocation per transport
        the peer picks).
        """
        servers = [IceServer((str(url),)) for url in self.urls if not url.is_turn]
        if self.turn_urls:
            if self.turn_secret is not None:
                expires_at = int(now) + self.credential_ttl_s
                username, credential = turn_rest_credentials(self.turn_secret, expires_at, user_id)
            else:
                username, credential = self.username or "", self.credential or ""
            turn = tuple(str(url) for url in self.turn_urls)
            servers.append(IceServer(turn, username, credential))
        return servers


# -- Link headers (RFC 8288, as WHIP/WHEP use them) ------------------------------


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def link_header_values(servers: Iterable[IceServer]) -> list[str]:
    """One ``Link`` header value per URL of every server."""
    values = []
    for server in servers:
        for url in server.urls:
            value = f'<{url}>; rel="{ICE_SERVER_REL}"'
            if server.username is not None and server.credential is not None:
                value += (
                    f"; username={_quoted(server.username)}"
                    f"; credential={_quoted(server.credential)}"
                    '; credential-type="password"'
                )
            values.append(value)
    return values


class LinkHeaderError(ValueError):
    """A ``Link`` header value that is not RFC 8288 syntax."""


def _parse_links(value: str) -> list[tuple[str, dict[str, str]]]:
    """Every link of one header value: (target, parameters with lower-case names)."""
    links: list[tuple[str, dict[str, str]]] = []
    position, length = 0, len(value)

    def skip_space() -> None:
        nonlocal position
        while position < length and value[position] in " \t":
            position += 1

    while True:
        skip_space()
        if position >= length:
            return links
        if value[position] != "<":
            raise LinkHeaderError(f"expected '<' at {position} of {value!r}")
        end = value.find(">", position)
        if end < 0:
            raise LinkHeaderError(f"unterminated '<' in {value!r}")
        target = value[position + 1 : end]
        position = end + 1
        params: dict[str, str] = {}
        while True:
            skip_space()
            if position >= length or value[position] == ",":
                position += 1
                break
            if value[position] != ";":
                raise LinkHeaderError(f"expected ';' or ',' at {position} of {value!r}")
            position += 1
            skip_space()
            name = re.match(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", value[position:])
            if name is None:
                raise LinkHeaderError(f"expected a parameter name at {position} of {value!r}")
            position += name.end()
            skip_space()
            text = ""
            if position < length and value[position] == "=":
                position += 1
                skip_space()
                if position < length and value[position] == '"':
                    position += 1
                    chars = []
                    while position < length and value[position] != '"':
                        if value[position] == "\\" and position + 1 < length:
                            position += 1
                        chars.append(value[position])
                        position += 1
                    if position >= length:
                        raise LinkHeaderError(f"unterminated quoted string in {value!r}")
                    position += 1
                    text = "".join(chars)
                else:
                    token = re.match(r"[^;,\s]*", value[position:])
                    assert token is not None
                    text = token.group()
                    position += token.end()
            params.setdefault(name.group().lower(), text)
        links.append((target, params))


def parse_link_headers(values: Sequence[str]) -> list[IceServer]:
    """The ICE servers in ``Link`` header values (repeated headers or comma-joined).

    Links of other relations are ignored, as are ICE servers with a URL that
    is not stun:/turn:/turns:. Raises ``LinkHeaderError`` on broken syntax.
    """
    servers = []
    for value in values:
        for target, params in _parse_links(value):
            if ICE_SERVER_REL not in params.get("rel", "").lower().split():
                continue
            try:
                parse_ice_url(target)
            except ValueError:
                continue
            credential_type = params.get("credential-type", "password")
            if "username" in params and credential_type == "password":
                servers.append(IceServer((target,), params["username"], params.get("credential")))
            else:
                servers.append(IceServer((target,)))
    return servers
