"""Checks a peer's SDP before aiortc applies it.

aiortc accepts a description whose media sections lack ICE credentials or
DTLS parameters, then fails much later inside its transports (an
AttributeError in a task, a bare "connection closed"). A description from a
client or a browser is untrusted input, so it is refused up front with a
reason that names what is missing.
"""

from __future__ import annotations

from aiortc.sdp import SessionDescription


class InvalidDescription(ValueError):
    """The SDP cannot start a session; the message says why."""


def check_remote_description(sdp: str, what: str) -> SessionDescription:
    """Parse ``sdp`` and check every media section can connect; ``what`` names it."""
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
