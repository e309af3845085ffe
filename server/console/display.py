"""The server's window: each answered frame's true centre and the client's answer.

Both marks come from the same ledger entry, so what you see is the
frame-exact comparison the scores are made of, not "truth now" against an
answer about a frame from 40 ms ago. The marks are drawn by
``server.console.annotation``, the same code that draws the browser viewer's video.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

import cv2
import numpy as np

from server.console.annotation import describe, draw_caption, draw_record
from server.core.ledger import FrameRecord

WINDOW_TITLE = "ball tracker - server"
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
        draw_record(canvas, record, self._radius)
        draw_caption(canvas, [describe(record)])
        return canvas

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            cv2.destroyWindow(WINDOW_TITLE)
            cv2.waitKey(1)
