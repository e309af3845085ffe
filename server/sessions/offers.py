"""Checks a peer's SDP before aiortc applies it.

aiortc accepts a description whose media sections lack ICE credentials or
DTLS parameters, then fails much later inside its transports (an
AttributeError in a task, a bare "connection closed"). A description from a
client or a browser is untrusted input, so it is refused up front with a
reason that names what is missing.
"""

from __future__ import annotations

from aiortc.sdp import SessionDescription

#: ICE candidates one description (or one session's trickle) may carry. A
#: host has one per interface and protocol; aioice pairs and checks every
#: one on the loop all sessions share, so thousands would stall them all.
MAX_CANDIDATES = 64


class InvalidDescription(ValueError):
    """The SDP cannot start a session; the message says why."""


def check_remote_description(sdp: str, what: str) -> SessionDescription:
    """Parse ``sdp`` and check every media section can connect; ``what`` names it."""
    candidates = sdp.count("a=candidate:")
    if candidates > MAX_CANDIDATES:
        # Counted before parsing: the parse itself is what would cost.
        raise InvalidDescription(
            f"the {what} has {candidates} ICE candidates (at most {MAX_CANDIDATES})"
        )
    try:
        description = SessionDescription.parse(sdp)
    except (ValueError, AssertionError, IndexError, KeyError, TypeError):
        # aiortc's parser asserts or indexes out of range on some malformed lines.
        raise InvalidDescription(f"malformed SDP in the {what}") from None
    if not description.media:
        raise InvalidDescription(f"the {what} has no media section")
    for media in description.media:
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise InvalidDescription(f"the {what}'s {media.kind} section has no ICE credentials")
        if media.dtls is None or not media.dtls.fingerprints:
            raise InvalidDescription(
                f"the {what}'s {media.kind} section has no DTLS fingerprint and role"
            )
    return description
