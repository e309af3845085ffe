"""Per-stage timestamps of each frame's trip, and the file format both sides write.

A frame's latency (produced on the server, answered back to it) is the sum of
many small stages in three processes and five threads. Each side records, per
frame, when the frame passed each of its stages (``STAGES``, in path order),
on ``time.monotonic()``, and writes one JSON line per frame keyed by the
frame's RTP timestamp as it was on the wire, the one key both sides know:

    {"trace": "stage-trace", "version": 1, "side": "server", "clock": {...}, "pid": 7}
    {"rtp": 1062973740, "session": "session-...-0001", "t": {"produced": 5123.000125, ...}}

The first line says which clock the times are on. ``time.monotonic()`` is
CLOCK_MONOTONIC, one clock for every process on one host (boot), unless a
time namespace shifts it, so two traces line up only if their ``ClockDomain``
is the same: same boot id, same namespace offset. Across hosts only the round
trip, measured on the server alone, means anything; ``merge_traces`` refuses
to join traces from different clocks rather than print a budget of noise.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Literal, Mapping, Optional, Union

Side = Literal["server", "client"]

FORMAT_NAME = "stage-trace"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StageSpec:
    """One point on a frame's path: where it is taken, and on which side."""

    name: str
    side: Side
    where: str
    #: A stage a frame passes more than once (one per packet) keeps its
    #: ``first`` or its ``last`` time.
    keep: Literal["first", "last"] = "first"


#: Every stage, in the order a frame passes them.
STAGES: tuple[StageSpec, ...] = (
    StageSpec("produced", "server", "the track hands the frame to the sender (latency starts)"),
    StageSpec("encode_start", "server", "the encoder thread starts encoding it"),
    StageSpec("encode_end", "server", "the encoder returns its payloads"),
    StageSpec("first_packet_sent", "server", "its first RTP packet goes to SRTP and the socket"),
    StageSpec(
        "last_packet_sent", "server", "its last RTP packet goes to SRTP and the socket", "last"
    ),
    StageSpec("first_packet_received", "client", "its first RTP packet reaches the receiver"),
    StageSpec("last_packet_received", "client", "its last RTP packet reaches the receiver", "last"),
    StageSpec("frame_complete", "client", "the jitter buffer hands it to the decoder queue"),
    StageSpec("decode_start", "client", "the decoder thread takes it"),
    StageSpec("decoded", "client", "the decoder returns the picture"),
    StageSpec("delivered", "client", "the client's event loop gets it from the track"),
    StageSpec(
        "handed_to_detector", "client", "its luma plane is copied to shared memory, detector woken"
    ),
    StageSpec("detection_start", "client", "the detector process takes it"),
    StageSpec("detected", "client", "the detector posts its result"),
    StageSpec("answer_queued", "client", "the answer is given to the data channel"),
    StageSpec("answer_sent", "client", "the SCTP packet carrying it is given to DTLS"),
    StageSpec("answer_received", "server", "the session gets the answer (latency ends)"),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
_SPECS: dict[str, StageSpec] = {s.name: s for s in STAGES}


def stages_of(side: Side) -> tuple[str, ...]:
    return tuple(s.name for s in STAGES if s.side == side)


def stage_spec(name: str) -> StageSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}") from None


# --- which clock ------------------------------------------------------------


@dataclass(frozen=True)
class ClockDomain:
    """What makes two processes' ``time.monotonic()`` the same clock.

    CLOCK_MONOTONIC counts from boot, so it is shared by every process of one
    boot of one host, containers included, unless a time namespace offsets
    it (``/proc/self/timens_offsets``). The host name is only for people: a
    container has its own.
    """

    boot_id: Optional[str]
    monotonic_offset: str
    hostname: str

    @classmethod
    def current(cls, proc: Path = Path("/proc")) -> "ClockDomain":
        return cls(
            boot_id=_read(proc / "sys/kernel/random/boot_id"),
            monotonic_offset=_monotonic_offset(_read(proc / "self/timens_offsets")),
            hostname=socket.gethostname(),
        )

    def same_clock(self, other: "ClockDomain") -> bool:
        return (
            self.boot_id is not None
            and self.boot_id == other.boot_id
            and self.monotonic_offset == other.monotonic_offset
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "boot_id": self.boot_id,
            "monotonic_offset": self.monotonic_offset,
            "hostname": self.hostname,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClockDomain":
        return cls(data.get("boot_id"), str(data.get("monotonic_offset", "")), data["hostname"])


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _monotonic_offset(timens_offsets: Optional[str]) -> str:
    """The ``monotonic`` line of ``timens_offsets`` ("0 0" without a time namespace)."""
    for line in (timens_offsets or "").splitlines():
        fields = line.split()
        if fields and fields[0] == "monotonic":
            return " ".join(fields[1:])
    return "0 0"


def is_local_address(host: str) -> bool:
    """Whether ``host`` (a name or an address) is an address of this machine.

    A socket can bind only to an address the machine has, which settles it
    without listing interfaces. Stage times from a peer on another host are
    on another clock: tracing warns when the peer is not local.
    """
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return False
    for family, _, _, _, address in infos:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((address[0], 0, *address[2:]))
        except OSError:
            return False
    return bool(infos)


def peer_host(peer: str) -> str:
    """The host part of ``host:port``, ``[v6]:port`` or a bare host; "" if none."""
    peer = peer.split(" ", 1)[0]
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    if peer.count(":") == 1:
        return peer.rsplit(":", 1)[0]
    return peer


# --- one frame's times ------------------------------------------------------


@dataclass
class FrameStages:
    """The stage times one side recorded for one frame."""

    rtp: int
    session: str
    times: dict[str, float] = field(default_factory=dict)

    def mark(self, stage: str, at: float) -> None:
        keep = stage_spec(stage).keep
        held = self.times.get(stage)
        if held is None:
            self.times[stage] = at
        elif keep == "last":
            self.times[stage] = max(held, at)
        else:
            self.times[stage] = min(held, at)

    def merge(self, other: "FrameStages") -> None:
        for stage, at in other.times.items():
            self.mark(stage, at)

    def as_record(self) -> dict[str, Any]:
        return {"rtp": self.rtp, "session": self.session, "t": self.times}


class StageRecorder:
    """Collects stage times per frame and hands each frame on once it is done.

    A frame is done when its side's last stage is marked (``finish``), or,
    if that never comes (a frame the detector skipped, an answer lost), when
    ``capacity`` newer frames are open. Bounded either way.
    """

    def __init__(
        self, session: str, emit: Callable[[FrameStages], None], capacity: int = 256
    ) -> None:
        self._session = session
        self._emit = emit
        self._capacity = capacity
        self._open: dict[int, FrameStages] = {}

    def mark(self, rtp: int, stage: str, at: float) -> None:
        frame = self._open.get(rtp)
        if frame is None:
            frame = self._open[rtp] = FrameStages(rtp, self._session)
            if len(self._open) > self._capacity:
                self._emit(self._open.pop(next(iter(self._open))))
        frame.mark(stage, at)

    def finish(self, rtp: int, stage: str, at: float) -> None:
        """Mark the side's last stage and hand the frame on."""
        self.mark(rtp, stage, at)
        self._emit(self._open.pop(rtp))

    @property
    def open_frames(self) -> int:
        return len(self._open)

    def close(self) -> None:
        """Hand on every open frame."""
        while self._open:
            self._emit(self._open.pop(next(iter(self._open))))


# --- the file ---------------------------------------------------------------

#: How often the writer pushes its buffer to the file, so a killed process
#: loses at most this much.
FLUSH_INTERVAL_S = 2.0


class StageTraceWriter:
    """One process's trace file: a header line, then one line per frame.

    Lines stay in the file object's buffer, flushed every ``FLUSH_INTERVAL_S``
    and on ``close()``; writing a line costs a few microseconds.
    """

    def __init__(
        self,
        path: Union[str, Path],
        side: Side,
        clock: Callable[[], float] = time.monotonic,
        domain: Optional[ClockDomain] = None,
    ) -> None:
        self.path = Path(path)
        self.side = side
        self._clock = clock
        self._file: Optional[IO[str]] = open(self.path, "w", encoding="utf-8")
        self._flushed_at = clock()
        self.frames_written = 0
        header = {
            "trace": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "side": side,
            "clock": (domain or ClockDomain.current()).as_dict(),
            "pid": os.getpid(),
        }
        self._file.write(json.dumps(header) + "\n")

    def write(self, frame: FrameStages) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(frame.as_record(), separators=(",", ":")) + "\n")
        self.frames_written += 1
        now = self._clock()
        if now - self._flushed_at >= FLUSH_INTERVAL_S:
            self._file.flush()
            self._flushed_at = now

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "StageTraceWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TraceFormatError(ValueError):
    """A file that is not a stage trace this version can read."""


@dataclass
class StageTrace:
    side: Side
    domain: ClockDomain
    frames: dict[int, FrameStages]

    @classmethod
    def read(cls, path: Union[str, Path]) -> "StageTrace":
        with open(path, encoding="utf-8") as lines:
            return cls.parse(lines)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> "StageTrace":
        records = _records(lines)
        header = next(records, None)
        if header is None or header.get("trace") != FORMAT_NAME:
            raise TraceFormatError("not a stage trace (no header line)")
        if header.get("version") != FORMAT_VERSION:
            raise TraceFormatError(f"stage trace version {header.get('version')} unsupported")
        side = header.get("side")
        if side not in ("server", "client"):
            raise TraceFormatError(f"unknown side {side!r}")
        frames: dict[int, FrameStages] = {}
        for record in records:
            try:
                frame = FrameStages(int(record["rtp"]), str(record["session"]))
                for stage, at in record["t"].items():
                    frame.mark(stage, float(at))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise TraceFormatError(f"bad frame record {record!r}: {exc}") from None
            held = frames.get(frame.rtp)
            if held is None:
                frames[frame.rtp] = frame
            else:
                held.merge(frame)
        return cls(side, ClockDomain.from_dict(header["clock"]), frames)


def _records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            # A process killed mid-write leaves half a last line.
            continue
        if not isinstance(record, dict):
            raise TraceFormatError(f"line {number} is not an object")
        yield record


class ClockMismatch(ValueError):
    """Two traces on different clocks (different hosts, boots or time namespaces)."""


def merge_traces(server: StageTrace, client: StageTrace) -> dict[int, dict[str, float]]:
    """Every stage time of each frame both sides traced, by RTP timestamp.

    :raises ClockMismatch: the traces were not taken on one clock; only the
        server's own round trip is meaningful then.
    """
    if server.side != "server" or client.side != "client":
        raise ValueError("merge_traces takes a server trace and a client trace")
    if not server.domain.same_clock(client.domain):
        raise ClockMismatch(
            f"server trace from {server.domain.hostname} (boot {server.domain.boot_id}) and "
            f"client trace from {client.domain.hostname} (boot {client.domain.boot_id}) are "
            "on different clocks: only the round trip means anything across hosts"
        )
    merged: dict[int, dict[str, float]] = {}
    for rtp, frame in server.frames.items():
        other = client.frames.get(rtp)
        if other is not None:
            merged[rtp] = {**frame.times, **other.times}
    return merged
