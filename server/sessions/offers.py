"""Every check of a peer's SDP before aiortc applies it, and the one error they raise.

aiortc accepts a description whose media sections lack ICE credentials or
DTLS parameters, or whose mids and BUNDLE group do not match, then fails much
later inside its transports (an AttributeError in a task, a bare
"connection closed", even in ``close``). A description from a client or a
browser is untrusted input, so it is refused up front with a reason that
names what is missing: ``InvalidDescription``, which the console turns into
a 400 and signaling into the end of the session.

- ``check_remote_description``: a client's answer on signaling (and any
  description that must connect);
- ``receiving_video_mid``: a browser's WHEP offer, for a viewer or a tracking
  session;
- ``check_tracking_offer``: a browser's offer to track (``/track``).
"""

from __future__ import annotations

from aiortc.sdp import SessionDescription

#: ICE candidates one description (or one session's trickle) may carry. A
#: host has one per interface and protocol; aioice pairs and checks every
#: one on the loop all sessions share, so thousands would stall them all.
MAX_CANDIDATES = 64

#: Directions of an offered m-line whose sender can receive our video.
_RECEIVING = ("recvonly", "sendrecv")


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


def receiving_video_mid(offer_sdp: str) -> str:
    """The mid of the offer's first video section that can receive.

    Besides parsing, it checks what aiortc takes for granted and fails on
    deep inside (in ``close``, even): every section has a mid of its own, and
    a BUNDLE group names only those.
    """
    description = _parse_offer(offer_sdp)
    mids = [media.rtp.muxId for media in description.media]
    if not all(mids) or len(set(mids)) != len(mids):
        raise InvalidDescription("every section of the offer needs an a=mid of its own")
    for group in description.group:
        if group.semantic == "BUNDLE" and not set(group.items) <= set(mids):
            raise InvalidDescription("the offer's BUNDLE group names a section it does not have")
    for media in description.media:
        if media.kind == "video" and media.port != 0 and media.direction in _RECEIVING:
            return media.rtp.muxId
    raise InvalidDescription(
        "the offer has no video section that can receive (recvonly or sendrecv)"
    )


def check_tracking_offer(offer_sdp: str) -> None:
    """Refuse, before a session is spent on it, an offer that cannot be tracked.

    It needs a video section that can receive, the first of its video
    sections (aiortc gives our video to the first one), and a data channel.
    """
    video_mid = receiving_video_mid(offer_sdp)  # parses and checks the mids
    media = _parse_offer(offer_sdp).media
    first_video = next(m for m in media if m.kind == "video")
    if first_video.rtp.muxId != video_mid:
        raise InvalidDescription("the offer's first video section must be recvonly")
    if not any(m.kind == "application" for m in media):
        raise InvalidDescription("the offer has no data channel (m=application) for the answers")


def rejected_offer(exc: BaseException) -> InvalidDescription:
    """The error for an offer aiortc itself refused to apply with ``exc``."""
    return InvalidDescription(f"the offer was rejected: {exception_reason(exc)}")


def exception_reason(exc: BaseException) -> str:
    """``exc`` as one line: its type, and its message if it has one."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parse_offer(offer_sdp: str) -> SessionDescription:
    if not isinstance(offer_sdp, str) or not offer_sdp.strip():
        raise InvalidDescription("the offer is empty")
    try:
        return SessionDescription.parse(offer_sdp)
    except Exception as exc:  # aiortc's parser raises whatever a bad line triggers
        raise InvalidDescription(f"the offer is not valid SDP: {exception_reason(exc)}") from exc
