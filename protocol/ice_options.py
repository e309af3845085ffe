"""The ICE flags both programs take, and the ``IceSettings`` they make.

Each has an environment variable of its own; ``BALLTRACKER_ICE_SERVERS``
takes several URLs separated by commas or spaces. A TURN secret or
credential is better given through the environment than on a command line
that every user of the machine can read (``ps``).
"""

from __future__ import annotations

import argparse
from typing import Optional

from protocol.ice_servers import TRANSPORT_POLICIES, IceSettings, IceUrl, ice_url_list


def ice_urls(text: str) -> list[IceUrl]:
    """argparse ``type``: one or more URLs, keeping the parser's reason in the error."""
    try:
        return ice_url_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_ice_arguments(parser: argparse.ArgumentParser, handed_to: Optional[str] = None) -> None:
    """``--ice-server``, the credentials and ``--ice-transport-policy``.

    ``handed_to``: on the server, ``--ice-server`` is what it hands to that
    audience, and its own peer connections take ``--own-ice-server``.
    """
    purpose = f"handed to {handed_to}" if handed_to else "this client's peer connection uses"
    parser.add_argument(
        "--ice-server",
        action="extend",
        type=ice_urls,
        default=None,
        metavar="URL",
        environment_variable="BALLTRACKER_ICE_SERVERS",
        help=f"STUN/TURN server {purpose} (stun:, turn:, turns: with ?transport=udp|tcp); "
        "repeatable, or several in the variable",
    )
    parser.add_argument(
        "--ice-username",
        default=None,
        environment_variable="BALLTRACKER_ICE_USERNAME",
        help="static TURN username (with --ice-credential)",
    )
    parser.add_argument(
        "--ice-credential",
        default=None,
        environment_variable="BALLTRACKER_ICE_CREDENTIAL",
        help="static TURN password (with --ice-username)",
    )
    parser.add_argument(
        "--turn-secret",
        default=None,
        environment_variable="BALLTRACKER_TURN_SECRET",
        help="the TURN server's shared secret (coturn use-auth-secret): mint "
        "short-lived credentials from it instead of static ones",
    )
    parser.add_argument(
        "--ice-transport-policy",
        choices=TRANSPORT_POLICIES,
        default="all",
        environment_variable="BALLTRACKER_ICE_TRANSPORT_POLICY",
        help="relay: only relayed paths (needs a TURN server)"
        + (" for the server's own peer connections" if handed_to else ""),
    )


def ice_settings(args: argparse.Namespace, urls: Optional[list[IceUrl]]) -> IceSettings:
    return IceSettings(
        urls=tuple(urls or ()),
        username=args.ice_username,
        credential=args.ice_credential,
        turn_secret=args.turn_secret,
        transport_policy=args.ice_transport_policy,
    )
