"""Encoder options for this stream, merged into the ones aiortc sets.

aiortc's encoders are set up for camera video. This stream is a rendered
ball on black: nothing to denoise, little to search. Two options cost time
for no benefit here (the error mean is unchanged without them; the encode
times are in docs/latency.md):

- VP8: libvpx's temporal denoiser, ``noise-sensitivity`` 4, filters every
  frame against the previous one before encoding: off, it costs about a third
  of the encode time at 640x480 and more than half at 1080p. And aiortc's
  speed ``cpu-used`` -6: -16, libvpx's fastest real-time setting, encodes
  faster with the same error and a few % more bits (docs/capacity.md). Used by
  ``server.media.encoder_rate``.
- H.264: libx264 runs its default ``medium`` preset (with ``zerolatency``).
  ``ultrafast`` encodes in well under half the time, at a larger frame that
  stays far below the bitrate.

Threads: aiortc sizes libvpx's thread pool by the frame size and
``multiprocessing.cpu_count()``, the machine's cores. In a container that is
the node's count (64 on a big node) while the pod may use one: eight row
threads that spin-wait for each other on one core. ``encoder_threads``
keeps aiortc's rule but counts the cores this process may use (its
affinity and its cgroup's CPU limit). Below its thresholds (three cores for
720p, eight for 1080p) libvpx keeps one thread, and that is right on a
small machine too: on cores shared with a client, the second thread
spin-waits and lengthens the tail (docs/capacity.md).

``OptionOverrides`` wraps each codec context an aiortc encoder creates and
merges the overrides into the ``options`` dict aiortc assigns, before the
context opens (and, given a thread policy, replaces aiortc's thread count);
every other setting stays aiortc's. ``FastH264Encoder`` is
aiortc's H.264 encoder with it, put into a sender before its first frame by
``install_fast_h264_encoder`` (the VP8 encoder is the session's rate
controlled one). Like every hook into aiortc, version-guarded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from aiortc import RTCRtpSender
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import number_of_threads

from protocol.aiortc_internals import (
    IncompatibleAiortcError,
    OtherPrivate,
    SenderPrivate,
    check_aiortc_version,
    check_problems,
    code_names,
)

VP8_OPTION_OVERRIDES: dict[str, str] = {"noise-sensitivity": "0", "cpu-used": "-16"}
H264_OPTION_OVERRIDES: dict[str, str] = {"preset": "ultrafast"}

#: The cgroup v2 CPU limit of this process's container (the root of its cgroup namespace).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

ThreadPolicy = Callable[[int, int], int]
"""``threads(width, height)``: how many threads an encoder of that frame size gets."""


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU limit."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 limit to read: the affinity alone
        pass
    return cores


def encoder_threads(width: int, height: int, cores: int) -> int:
    """libvpx threads for one encoder of ``width`` x ``height`` on ``cores`` usable cores."""
    return int(number_of_threads(width * height, cores))


class OptionOverrides:
    """A codec context being set up by aiortc, with ``overrides`` merged into its options
    and, with ``threads``, its thread count chosen by ``threads(width, height)``."""

    def __init__(
        self, context: Any, overrides: Mapping[str, str], threads: Optional[ThreadPolicy] = None
    ) -> None:
        object.__setattr__(self, "_context", context)
        object.__setattr__(self, "_overrides", dict(overrides))
        object.__setattr__(self, "_threads", threads)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "options":
            value = {**value, **self._overrides}
        elif name == "thread_count" and self._threads is not None:
            value = self._threads(self._context.width, self._context.height)
        setattr(self._context, name, value)


def option_constants(function: Any) -> set[Any]:
    """The constants ``function``'s code uses, dict display keys (one tuple) unpacked."""
    found: set[Any] = set()
    for constant in getattr(getattr(function, "__code__", None), "co_consts", ()):
        found.update(constant if isinstance(constant, tuple) else (constant,))
    return found


class FastH264Encoder(H264Encoder):
    """aiortc's ``H264Encoder`` with ``H264_OPTION_OVERRIDES``."""

    def __init__(self) -> None:
        self._codec: Optional[OptionOverrides] = None
        super().__init__()

    @property  # type: ignore[override]  # a stand-in for the context aiortc assigns
    def codec(self) -> Optional[OptionOverrides]:
        return self._codec

    @codec.setter
    def codec(self, context: Any) -> None:
        # aiortc's _encode_frame assigns each new libx264 context here, then sets it up.
        self._codec = None if context is None else OptionOverrides(context, H264_OPTION_OVERRIDES)


def check_h264_hook() -> None:
    """Raise ``IncompatibleAiortcError`` unless aiortc's H.264 encoder is set up as assumed."""
    check_aiortc_version()
    problems = []
    setup = getattr(H264Encoder, OtherPrivate.H264_ENCODE_FRAME, None)
    for name in ("codec", "options", "CodecContext"):
        if name not in code_names(setup):
            problems.append(f"H264Encoder._encode_frame no longer uses {name}")
    if "libx264" not in option_constants(setup):
        problems.append("H264Encoder no longer encodes with libx264")
    if SenderPrivate.ENCODER not in code_names(
        getattr(RTCRtpSender, SenderPrivate.NEXT_ENCODED_FRAME, None)
    ):
        problems.append("RTCRtpSender._next_encoded_frame no longer keeps its __encoder")
    check_problems("H.264 encoding", problems)


def install_fast_h264_encoder(sender: RTCRtpSender) -> FastH264Encoder:
    """Give an H.264 ``sender`` a ``FastH264Encoder``; before its first frame.

    :raises IncompatibleAiortcError: see ``check_h264_hook``.
    :raises RuntimeError: the sender already has an encoder (it has sent).
    """
    check_h264_hook()
    encoder = FastH264Encoder()
    install_sender_encoder(sender, encoder, "install_fast_h264_encoder")
    return encoder


def install_sender_encoder(sender: RTCRtpSender, encoder: Any, installer: str) -> None:
    """Put ``encoder`` into ``sender``'s private encoder slot, before its first frame.

    :raises IncompatibleAiortcError: the sender has no such slot.
    :raises RuntimeError: the sender already has an encoder (it has sent).
    """
    if not hasattr(sender, SenderPrivate.ENCODER):
        raise IncompatibleAiortcError(f"{type(sender).__name__} has no {SenderPrivate.ENCODER}")
    if getattr(sender, SenderPrivate.ENCODER) is not None:
        raise RuntimeError(f"{installer} must run before the first frame")
    setattr(sender, SenderPrivate.ENCODER, encoder)
