"""protocol/ice_servers.py: URLs, credentials and Link headers, in microseconds."""

from __future__ import annotations

import pytest

from protocol.ice_servers import (
    IceServer,
    IceSettings,
    IceUrl,
    LinkHeaderError,
    ice_url_list,
    link_header_values,
    parse_ice_url,
    parse_link_headers,
    turn_rest_credentials,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stun:stun.example.net", IceUrl("stun", "stun.example.net", 3478, None)),
        ("stun:192.0.2.7:19302", IceUrl("stun", "192.0.2.7", 19302, None)),
        ("turn:relay", IceUrl("turn", "relay", 3478, "udp")),
        ("turn:relay:3479?transport=tcp", IceUrl("turn", "relay", 3479, "tcp")),
        ("TURN:relay?transport=UDP", IceUrl("turn", "relay", 3478, "udp")),
        ("turns:relay.example.net", IceUrl("turns", "relay.example.net", 5349, "tcp")),
        ("turns:relay:443?transport=tcp", IceUrl("turns", "relay", 443, "tcp")),
        ("turn:[2001:db8::1]:3478", IceUrl("turn", "2001:db8::1", 3478, "udp")),
    ],
)
def test_parses_the_three_schemes(text: str, expected: IceUrl) -> None:
    assert parse_ice_url(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("http://relay", "starts with stun:, turn: or turns:"),
        ("relay:3478", "starts with stun:"),
        ("turn://relay", "no //"),
        ("turn:relay:0", "port must be 1-65535"),
        ("turn:relay:99999", "port must be 1-65535"),
        ("turn:relay?transport=sctp", "?transport=udp or ?transport=tcp"),
        ("turn:relay?foo=bar", "?transport=udp or ?transport=tcp"),
        ("stun:relay?transport=udp", "takes no ?transport"),
        ("turns:relay?transport=udp", "TLS"),
        ("turn:", "expected turn:host"),
        ("turn:a b", "expected turn:host"),
        ("turn:[nothost]", "expected turn:host"),
        ("turn:[::zz]", "expected turn:host"),
    ],
)
def test_refuses_bad_urls_with_a_reason(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("?", r"\?")):
        parse_ice_url(text)


def test_str_is_canonical_and_parses_back() -> None:
    for text in ("turn:relay", "turns:relay", "stun:relay:1", "turn:[2001:db8::1]?transport=tcp"):
        url = parse_ice_url(text)
        assert parse_ice_url(str(url)) == url
    assert str(parse_ice_url("turn:relay")) == "turn:relay:3478?transport=udp"


def test_relay_transport() -> None:
    assert parse_ice_url("turn:r").relay_transport == "udp"
    assert parse_ice_url("turn:r?transport=tcp").relay_transport == "tcp"
    assert parse_ice_url("turns:r").relay_transport == "tls"
    assert parse_ice_url("stun:r").relay_transport is None


def test_a_list_splits_on_commas_and_white_space() -> None:
    urls = ice_url_list(" stun:a, turn:b?transport=tcp  turns:c,\n")
    assert [u.scheme for u in urls] == ["stun", "turn", "turns"]
    assert ice_url_list("") == []
    with pytest.raises(ValueError, match="'nope'"):
        ice_url_list("stun:a,nope")


def test_turn_rest_credentials_match_coturns_scheme() -> None:
    # openssl dgst -sha1 -hmac north-sea -binary <<< "1700000000:alice" | base64
    assert turn_rest_credentials("north-sea", 1700000000, "alice") == (
        "1700000000:alice",
        "fYZsCfMUFS6r+6Q7R40Yu2hIbXk=",
    )
    # coturn splits the expiry off at the first colon: the id may not have one.
    username, _ = turn_rest_credentials("s", 5, "a:b")
    assert username == "5:a-b"


def settings(*urls: str, **kwargs: object) -> IceSettings:
    return IceSettings(tuple(parse_ice_url(u) for u in urls), **kwargs)  # type: ignore[arg-type]


def test_servers_mint_fresh_credentials_that_expire() -> None:
    ice = settings("stun:s", "turn:r", "turn:r?transport=tcp", turn_secret="k", credential_ttl_s=60)
    stun, turn = ice.servers("session-1", now=1000.5)
    assert stun == IceServer(("stun:s:3478",))
    assert turn.urls == ("turn:r:3478?transport=udp", "turn:r:3478?transport=tcp")
    assert (turn.username, turn.credential) == turn_rest_credentials("k", 1060, "session-1")
    assert ice.servers("session-2", now=1000.5)[1].username == "1060:session-2"


def test_servers_with_static_credentials_and_without_any_server() -> None:
    ice = settings("turn:r", username="u", credential="p")
    assert ice.servers("x", 0) == [IceServer(("turn:r:3478?transport=udp",), "u", "p")]
    assert IceSettings().servers("x", 0) == []


@pytest.mark.parametrize(
    ("ice", "complaint"),
    [
        (settings("turn:r"), "needs credentials"),
        (settings("turn:r", username="u"), "go together"),
        (settings("turn:r", turn_secret="k", username="u", credential="p"), "drop --ice-username"),
        (settings("turn:r", turn_secret=""), "must not be empty"),
        (settings("stun:s", transport_policy="relay"), "needs a TURN server"),
        (settings(transport_policy="none"), "one of all, relay"),
    ],
)
def test_problems_are_named(ice: IceSettings, complaint: str) -> None:
    problem = ice.problem()
    assert problem is not None and complaint in problem


def test_good_settings_have_no_problem() -> None:
    assert IceSettings().problem() is None
    assert settings("stun:s").problem() is None
    assert settings("turn:r", turn_secret="k", transport_policy="relay").problem() is None
    assert settings("turn:r", username="u", credential="p").problem() is None


def test_link_headers_round_trip() -> None:
    servers = [
        IceServer(("stun:s:3478",)),
        IceServer(("turn:r:3478?transport=udp", "turn:r:3478?transport=tcp"), "9:x", 'p"w\\d'),
    ]
    values = link_header_values(servers)
    assert values[0] == '<stun:s:3478>; rel="ice-server"'
    assert values[1] == (
        '<turn:r:3478?transport=udp>; rel="ice-server"; username="9:x"; '
        'credential="p\\"w\\\\d"; credential-type="password"'
    )
    parsed = parse_link_headers(values)
    assert parsed == [
        IceServer(("stun:s:3478",)),
        IceServer(("turn:r:3478?transport=udp",), "9:x", 'p"w\\d'),
        IceServer(("turn:r:3478?transport=tcp",), "9:x", 'p"w\\d'),
    ]
    # The same links joined into one header, as proxies may fold them.
    assert parse_link_headers([", ".join(values)]) == parsed


def test_link_parsing_skips_other_relations_and_schemes() -> None:
    values = [
        '</api/next>; rel="next"',
        "<https://example.net/>; rel=ice-server",
        '<turn:r?transport=tcp>; REL="ice-server"; username=u; credential=p',
        '<turn:r>; rel="ice-server"; username="u"; credential="t"; credential-type="oauth"',
    ]
    assert parse_link_headers(values) == [
        IceServer(("turn:r?transport=tcp",), "u", "p"),
        IceServer(("turn:r",)),
    ]


@pytest.mark.parametrize(
    "value",
    ['turn:r; rel="ice-server"', '<turn:r; rel="ice-server"', '<turn:r>; rel="ice', "<turn:r> x"],
)
def test_broken_link_syntax_is_an_error(value: str) -> None:
    with pytest.raises(LinkHeaderError):
        parse_link_headers([value])
