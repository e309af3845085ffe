import asyncio
import contextlib
import fractions
from typing import Iterator

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from server.core.scene import BallScene
from server.media.track import BallTrack


class FakeClock:
    """Time that only moves when the track sleeps, or when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def sleep_moves(clock: FakeClock) -> Iterator[None]:
    """Meanwhile ``asyncio.sleep`` moves ``clock`` on instead of waiting."""

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    original = asyncio.sleep
    asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        yield
    finally:
        asyncio.sleep = original  # type: ignore[assignment]


def run_track(fps: float, frames: int, stall_at: int = -1, stall_s: float = 0.0) -> list[tuple]:
    scene = BallScene(640, 480, 20.0, 300.0, 320.0, 240.0, 0.5)
    clock = FakeClock()
    produced: list[tuple] = []

    async def scenario() -> list[tuple]:
        with sleep_moves(clock):
            track = BallTrack(scene, fps, lambda *args: produced.append(args), clock)
            out = []
            for n in range(frames):
                if n == stall_at:
                    clock.now += stall_s
                frame = await track.recv()
                out.append((frame.pts, frame.time_base, frame.to_ndarray()))
            track.stop()
            with pytest.raises(MediaStreamError):
                await track.recv()
            return out

    frames_out = asyncio.run(scenario())
    return [(f, p) for f, p in zip(frames_out, produced)]


def test_pts_start_at_zero_and_follow_fps() -> None:
    results = run_track(60, 4)
    assert [frame[0] for frame, _ in results] == [0, 1500, 3000, 4500]
    assert results[0][0][1] == fractions.Fraction(1, 90000)


def test_each_frame_shows_the_scene_at_its_nominal_time() -> None:
    scene = BallScene(640, 480, 20.0, 300.0, 320.0, 240.0, 0.5)
    for (pts, _, planes), (index, x, y, produced_at, visibility) in [
        (frame, produced) for frame, produced in run_track(30, 5)
    ]:
        assert (x, y) == scene.position(index / 30)
        assert visibility == 1.0
        assert pts == index * 3000
        luma = planes[:480].astype(np.float64)
        rows, cols = np.indices(luma.shape)
        assert (cols * luma).sum() / luma.sum() == pytest.approx(x, abs=0.02)
        assert produced_at == pytest.approx(100.0 + index / 30)


def test_falling_behind_skips_to_the_frame_that_is_due() -> None:
    results = run_track(30, 4, stall_at=2, stall_s=0.2)
    indices = [produced[0] for _, produced in results]
    assert indices[:2] == [0, 1]
    assert indices[2] == 7  # 0.2 s late at 30 fps: frames 2..6 were never rendered


def test_start_gate_holds_the_first_frame() -> None:
    scene = BallScene(64, 48, 5.0, 10.0, 30.0, 20.0, 0.5)

    async def scenario() -> None:
        gate = asyncio.Event()
        track = BallTrack(scene, 30, lambda *args: None, start_gate=gate)
        first = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0.05)
        assert not first.done()
        gate.set()
        frame = await asyncio.wait_for(first, 1.0)
        assert frame.pts == 0
        track.stop()

    asyncio.run(scenario())


class Gate:
    """A frame gate that thins to every ``interval``-th frame and refuses some."""

    def __init__(self, interval: int, refuse: frozenset[int] = frozenset()) -> None:
        self.frame_interval = interval
        self._refuse = refuse
        self._asked = 0
        self.sent: list[tuple[int, float]] = []
        self.skipped = 0

    def admit(self, now: float) -> bool:
        self._asked += 1
        return self._asked not in self._refuse

    def frame_sent(self, index: int, now: float) -> None:
        self.sent.append((index, now))

    def frames_skipped(self, count: int, now: float) -> None:
        self.skipped += count


def gated_frames(gate: Gate, count: int) -> tuple[list[tuple], BallTrack]:
    scene = BallScene(640, 480, 20.0, 300.0, 320.0, 240.0, 0.5)
    clock = FakeClock()
    produced: list[tuple] = []

    async def scenario() -> BallTrack:
        with sleep_moves(clock):
            track = BallTrack(
                scene, 30, lambda *args: produced.append(args), clock, frame_gate=gate
            )
            for _ in range(count):
                frame = await track.recv()
                assert frame.pts == produced[-1][0] * 3000
            return track

    return produced, asyncio.run(scenario())


def test_a_frame_gate_thins_the_timeline_keeping_each_frames_truth() -> None:
    scene = BallScene(640, 480, 20.0, 300.0, 320.0, 240.0, 0.5)
    gate = Gate(interval=3)
    produced, track = gated_frames(gate, 4)
    assert [p[0] for p in produced] == [0, 3, 6, 9]
    for index, x, y, produced_at, _ in produced:
        assert (x, y) == scene.position(index / 30)  # frame n still shows n / fps
        assert produced_at == pytest.approx(100.0 + index / 30)
    assert [i for i, _ in gate.sent] == [0, 3, 6, 9]
    assert track.frames_skipped == 0
    assert track.frames_skipped_for_rate == 4 * 2 == gate.skipped


def test_a_frame_the_gate_refuses_is_skipped_at_the_source() -> None:
    gate = Gate(interval=1, refuse=frozenset({2, 3}))
    produced, track = gated_frames(gate, 3)
    assert [p[0] for p in produced] == [0, 3, 4]  # frames 1 and 2 were held back
    assert track.frames_held == 2
    assert track.frames_skipped_for_rate == 2 == gate.skipped
    assert track.frames_skipped == 0


def test_a_scene_is_streamed_with_its_truth_and_visibility() -> None:
    from server.core.renderer import yuv420p_frame
    from server.core.scenes import make_scene

    motion = BallScene.from_seed(640, 480, 20.0, 300.0, 1)
    produced: list[tuple] = []
    clock = FakeClock()

    async def scenario() -> list[np.ndarray]:
        with sleep_moves(clock):
            scene = make_scene("occlusion", motion, 30, 1)
            track = BallTrack(scene, 30, lambda *args: produced.append(args), clock)
            return [(await track.recv()).to_ndarray() for _ in range(20)]

    frames = asyncio.run(scenario())
    reference = make_scene("occlusion", motion, 30, 1)
    visibilities = []
    for planes, (index, x, y, _, visibility) in zip(frames, produced):
        truth = reference.truth(index)
        assert (x, y, visibility) == (truth.x, truth.y, truth.visibility)
        assert np.array_equal(planes, yuv420p_frame(*reference.render(index)).to_ndarray())
        visibilities.append(visibility)
    assert min(visibilities) == 0.0 and max(visibilities) == 1.0  # seed 1 hides it early


def test_first_due_places_the_whole_frame_grid() -> None:
    from server.core.frame_phases import FramePhases

    scene = BallScene(64, 48, 5.0, 10.0, 30.0, 20.0, 0.5)
    clock = FakeClock()
    phases = FramePhases(30)
    phases.claim("other", clock.now)  # another session owns phase now % interval
    produced: list[tuple] = []

    async def scenario() -> None:
        with sleep_moves(clock):
            track = BallTrack(
                scene,
                30,
                lambda *args: produced.append(args),
                clock,
                first_due=lambda now: phases.claim("this", now),
            )
            for _ in range(3):
                await track.recv()

    start = clock.now
    asyncio.run(scenario())
    # One interval after the other session's first frame (the start
    # spacing), half an interval off its grid, then every interval; each
    # frame keeps index n and its truth at n / fps.
    assert [p[0] for p in produced] == [0, 1, 2]
    assert [p[3] - start for p in produced] == pytest.approx(
        [1 / 30 + 1 / 60, 2 / 30 + 1 / 60, 3 / 30 + 1 / 60]
    )
    assert [(p[1], p[2]) for p in produced] == [scene.position(n / 30) for n in range(3)]


def test_a_stopped_track_lets_go_of_its_sessions_callbacks() -> None:
    import gc
    import weakref

    class Session:
        def frame_sent(self, *args: object) -> None: ...

        def first_due(self, now: float) -> float:
            return now

    session = Session()
    track = BallTrack(
        BallScene(64, 48, 5.0, 10.0, 30.0, 20.0, 0.5),
        30,
        session.frame_sent,
        FakeClock(),
        first_due=session.first_due,
    )
    gone = weakref.ref(session)
    track.stop()
    gc.disable()  # reference counting alone must free it: no cycle left
    try:
        del session
        assert gone() is None
    finally:
        gc.enable()
