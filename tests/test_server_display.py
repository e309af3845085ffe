import numpy as np

from server.console.annotation import ANSWER_COLOUR, TRUTH_COLOUR
from server.console.display import ServerDisplay
from server.core.ledger import FrameRecord


def display() -> ServerDisplay:
    return ServerDisplay(320, 240, 20.0, lambda: None)


def colour_pixels(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Pixels whose dominant channel is the colour's (anti-aliased lines blend)."""
    channel = int(np.argmax(colour))
    others = [c for c in range(3) if c != channel]
    strong = image[:, :, channel] > 100
    weak = (image[:, :, others] < 60).all(axis=2)
    return np.argwhere(strong & weak)


def test_blank_before_any_answer() -> None:
    assert not display().draw(None).any()


def test_truth_circle_and_answer_cross_from_the_same_frame() -> None:
    record = FrameRecord(5, 15000, 100.0, 120.0, 0.0, True, 160.0, 60.0, 84.85, 6.0)
    image = display().draw(record)
    truth = colour_pixels(image, TRUTH_COLOUR)
    answer = colour_pixels(image, ANSWER_COLOUR)
    assert len(truth) > 50 and len(answer) > 10
    assert np.allclose(truth.mean(axis=0), (120, 100), atol=1.5)  # (row, col)
    assert np.allclose(answer.mean(axis=0), (60, 160), atol=1.5)


def test_unanswered_frame_shows_truth_only() -> None:
    image = display().draw(FrameRecord(1, 3000, 50.0, 50.0, 0.0, True))
    assert len(colour_pixels(image, ANSWER_COLOUR)) == 0
    assert len(colour_pixels(image, TRUTH_COLOUR)) > 50
