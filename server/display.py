"""The server's window: each answered frame's true centre and the client's answer.

Both marks come from the same ledger entry, so what you see is the
frame-exact comparison the scores are made of, not "truth now" against an
answer about a frame from 40 ms ago.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

import cv2
import numpy as np

from server.ledger import FrameRecord

WINDOW_TITLE = "ball tracker - server"
TRUTH_COLOUR = (0, 255, 0)  # BGR green
ANSWER_COLOUR = (0, 0, 255)  # BGR red
SUBPIXEL_BITS = 4
REFRESH_S = 1 / 30

AnswerSource = Callable[[], Optional[FrameRecord]]


class ServerDisplay:
    def __init__(self, width: int, height: int, radius: float, latest_answer: AnswerSource) -> None:
        self._size = (height, width)
        self._radius = radius
        self._latest_answer = latest_answer
        self._task: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE)
        self._task = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            cv2.imshow(WINDOW_TITLE, self.draw(self._latest_answer()))
            cv2.waitKey(1)
            await asyncio.sleep(REFRESH_S)

    def draw(self, record: Optional[FrameRecord]) -> np.ndarray:
        canvas = np.zeros((*self._size, 3), np.uint8)
        if record is None:
            return canvas
        scale = 1 << SUBPIXEL_BITS
        truth = (round(record.true_x * scale), round(record.true_y * scale))
        cv2.circle(
            canvas, truth, round(self._radius * scale), TRUTH_COLOUR, 1, cv2.LINE_AA, SUBPIXEL_BITS
        )
        text = f"frame {record.index}: truth ({record.true_x:.2f}, {record.true_y:.2f})"
        if record.reported_x is not None and record.reported_y is not None:
            answer = (round(record.reported_x), round(record.reported_y))
            cv2.drawMarker(canvas, answer, ANSWER_COLOUR, cv2.MARKER_CROSS, 16, 2)
            text += f" error {record.error_px:.3f} px latency {record.latency_ms:.1f} ms"
        cv2.putText(canvas, text, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        return canvas

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            cv2.destroyWindow(WINDOW_TITLE)
            cv2.waitKey(1)
