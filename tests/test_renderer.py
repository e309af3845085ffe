import numpy as np
import pytest

from server.core.renderer import BallRenderer, ball_box, draw_ball, render_luma, yuv420p_frame


def centroid(luma: np.ndarray) -> tuple[float, float]:
    weights = luma.astype(np.float64)
    rows, cols = np.indices(luma.shape)
    total = weights.sum()
    return float((cols * weights).sum() / total), float((rows * weights).sum() / total)


@pytest.mark.parametrize("x,y", [(100.0, 50.0), (320.37, 240.81), (33.5, 77.25)])
def test_rendered_ball_is_centred_on_the_true_position(x: float, y: float) -> None:
    luma = render_luma(640, 480, x, y, 20.0)
    cx, cy = centroid(luma)
    assert abs(cx - x) < 0.01 and abs(cy - y) < 0.01


def test_ball_is_white_inside_black_outside_and_antialiased() -> None:
    luma = render_luma(200, 100, 50.3, 50.0, 10.0)
    assert luma[50, 50] == 255
    assert luma[0, 0] == 0
    # Pixel 40 sits 10.3 px from the centre: 20% covered, a grey rim.
    assert luma[50, 40] == round(0.2 * 255)
    assert luma[50, 39] == 0


def test_area_matches_disc_area() -> None:
    luma = render_luma(200, 200, 100.3, 99.6, 25.0)
    assert luma.sum() / 255.0 == pytest.approx(np.pi * 25.0**2, rel=0.01)


def test_box_is_clipped_to_frame() -> None:
    assert ball_box(100, 100, -5.0, 50.0, 10.0) == (39, 62, 0, 7)
    assert ball_box(100, 100, -50.0, 50.0, 10.0) is None


def test_ball_off_frame_draws_nothing() -> None:
    luma = np.zeros((10, 10), np.uint8)
    assert draw_ball(luma, -100.0, -100.0, 3.0) is None
    assert not luma.any()


def test_renderer_clears_previous_ball_and_keeps_chroma_neutral() -> None:
    renderer = BallRenderer(64, 48, 5.0)
    renderer.render(10.0, 10.0)
    frame = renderer.render(50.0, 30.0)
    assert frame.format.name == "yuv420p"
    planes = frame.to_ndarray()  # (h * 3/2, w)
    luma = planes[:48]
    assert luma[10, 10] == 0 and luma[30, 50] == 255
    assert (planes[48:] == 128).all()
    assert np.array_equal(luma, render_luma(64, 48, 50.0, 30.0, 5.0))


def test_renderer_needs_even_size() -> None:
    with pytest.raises(ValueError):
        BallRenderer(63, 48, 5.0)


@pytest.mark.parametrize("width", [64, 642])  # 642: FFmpeg pads its rows
def test_renderer_output_matches_plain_render_for_padded_widths(width: int) -> None:
    renderer = BallRenderer(width, 48, 5.0)
    planes = renderer.render(20.25, 30.5).to_ndarray()
    assert np.array_equal(planes[:48], render_luma(width, 48, 20.25, 30.5, 5.0))
    assert (planes[48:] == 128).all()


def test_box_is_clipped_at_the_top_and_empty_just_past_an_edge() -> None:
    assert ball_box(100, 100, 50.0, -5.0, 10.0) == (0, 7, 39, 62)
    # The ball's reach ends exactly on the last row or column: nothing to draw.
    assert ball_box(100, 100, 50.0, 111.0, 10.0) is None
    assert ball_box(100, 100, 111.0, 50.0, 10.0) is None


def test_render_luma_is_a_uint8_plane() -> None:
    luma = render_luma(64, 48, 20.0, 20.0, 5.0)
    assert luma.dtype == np.uint8 and luma.shape == (48, 64)


@pytest.mark.parametrize("width,height", [(63, 48), (64, 45)])
def test_renderer_needs_even_size_both_ways(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="^I420 needs an even width and height$"):
        BallRenderer(width, height, 5.0)


def test_renderer_keeps_its_geometry() -> None:
    renderer = BallRenderer(64, 48, 5.0)
    assert (renderer.width, renderer.height, renderer.radius) == (64, 48, 5.0)


@pytest.mark.parametrize("width", [48, 720])  # luma rows unpadded, chroma rows padded
def test_renderer_output_matches_plain_render_when_only_chroma_is_padded(width: int) -> None:
    renderer = BallRenderer(width, 48, 5.0)
    planes = renderer.render(20.25, 30.5).to_ndarray()
    assert np.array_equal(planes[:48], render_luma(width, 48, 20.25, 30.5, 5.0))
    assert (planes[48:] == 128).all()


def test_a_frame_ring_reuses_its_frames_with_the_new_pixels() -> None:
    from av.video.frame import PictureType

    from server.core.renderer import FrameRing

    renderer, ring = BallRenderer(64, 48, 5.0), FrameRing(64, 48, size=2)
    first = ring.fill(*renderer.planes(20.0, 20.0))
    first_pixels = first.to_ndarray()
    first.pict_type = PictureType.I  # what aiortc does to force a keyframe
    second = ring.fill(*renderer.planes(30.0, 25.0))
    third = ring.fill(*renderer.planes(40.0, 30.0))
    assert third is first and second is not first
    assert np.array_equal(
        third.to_ndarray(), yuv420p_frame(*renderer.planes(40.0, 30.0)).to_ndarray()
    )
    assert not np.array_equal(third.to_ndarray(), first_pixels)
    assert third.pict_type == PictureType.NONE  # the keyframe request does not stick
    ring.close()
    fresh = ring.fill(*renderer.planes(40.0, 30.0))
    assert fresh is not first and fresh is not second
    assert np.array_equal(fresh.to_ndarray(), third.to_ndarray())


def test_a_vp8_stream_from_reused_frames_is_the_stream_from_fresh_ones() -> None:
    import fractions
    from typing import Callable

    import av
    from av.video.frame import PictureType

    from server.core.renderer import FrameRing

    def stream(make_frame: Callable[[BallRenderer, float, float], av.VideoFrame]) -> list[bytes]:
        encoder = av.CodecContext.create("libvpx", "w")
        encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
        encoder.time_base = fractions.Fraction(1, 90000)
        encoder.options = {"deadline": "realtime", "lag-in-frames": "0", "cpu-used": "-16"}
        renderer, out = BallRenderer(320, 240, 10.0), []
        for index in range(12):
            frame = make_frame(renderer, 50.0 + 7 * index, 60.0 + 3 * index)
            frame.pts, frame.time_base = 3000 * index, encoder.time_base
            if index == 5:
                frame.pict_type = PictureType.I  # as aiortc forces a keyframe
            out.append(b"".join(bytes(packet) for packet in encoder.encode(frame)))
        return out

    ring = FrameRing(320, 240)
    fresh = stream(lambda renderer, x, y: yuv420p_frame(*renderer.planes(x, y)))
    # Painted in place, only where the ball was and is.
    reused = stream(
        lambda renderer, x, y: ring.fill(*renderer.planes(x, y), damage=renderer.damage)
    )
    assert reused == fresh
    # One keyframe at the start and the one asked for: the request did not stick.
    assert [index for index, data in enumerate(reused) if data[0] & 1 == 0] == [0, 5]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_a_frame_ring_painting_only_the_damage_shows_every_frame_exactly(size: int) -> None:
    from server.core.renderer import FrameRing

    renderer, ring = BallRenderer(96, 64, 6.0), FrameRing(96, 64, size=size)
    # Across the frame, off its right edge (nothing drawn) and back.
    path = [(10.0 + 9.3 * i, 20.0 + 2.1 * i) for i in range(14)] + [(300.0, 30.0), (50.0, 40.0)]
    for x, y in path:
        planes = renderer.planes(x, y)
        frame = ring.fill(*planes, damage=renderer.damage)
        assert np.array_equal(frame.to_ndarray(), yuv420p_frame(*planes).to_ndarray()), (x, y)


def test_a_frame_ring_repaints_everything_after_a_render_that_gives_no_damage() -> None:
    from server.core.renderer import FrameRing

    ring = FrameRing(32, 16, size=2)
    luma, chroma = np.zeros((16, 32), np.uint8), np.full((8, 16), 128, np.uint8)
    ring.fill(luma, chroma, chroma)
    ring.fill(luma, chroma, chroma, damage=())
    luma[:] = 200  # a whole-picture change the render could not describe
    ring.fill(luma, chroma, chroma)
    frame = ring.fill(luma, chroma, chroma, damage=())
    assert frame.to_ndarray().min() != 0 and np.all(frame.to_ndarray()[:16] == 200)
