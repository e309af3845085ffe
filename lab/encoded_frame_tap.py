"""Each complete frame's pts, straight from aiortc's receiver, with nothing decoded.

The load client (``lab.load_client``) must receive every frame as a real
client does -- the same jitter buffer, NACKs and timestamp mapping -- but
without paying for a decoder. aiortc's receiver puts each complete frame,
its timestamp already mapped to a pts, on its decoder queue; the client's
``InlineDecoder`` hooks that queue's ``_put`` to decode on the event loop.
``EncodedFrameTap`` hooks the same place, the same way (its checks are the
inline decoder's), and hands over the pts alone. The decoder thread gets
nothing but the ``None`` that stops it, as with the inline decoder.
"""

from __future__ import annotations

import queue
from typing import Any, Callable, Optional

from aiortc import RTCRtpReceiver

from client.media.inline_decoder import check_inline_decoder_hook
from protocol.aiortc_internals import IncompatibleAiortcError, OtherPrivate, ReceiverPrivate
from protocol.instance_hook import InstanceHook

#: Called with each complete frame's pts, on the event loop, as it completes.
FrameSink = Callable[[int], None]


class EncodedFrameTap:
    """Lifecycle: ``install()`` after the jitter buffer is in place and before
    the receiver starts (as ``InlineDecoder``); ``remove()`` undoes it."""

    def __init__(self, receiver: RTCRtpReceiver, sink: FrameSink) -> None:
        self._receiver = receiver
        self._sink = sink
        self._hook: Optional[InstanceHook] = None

    def install(self) -> None:
        """:raises IncompatibleAiortcError: see ``check_inline_decoder_hook``.
        :raises RuntimeError: the receiver's decoder thread already runs."""
        check_inline_decoder_hook()
        decoder_queue = getattr(self._receiver, ReceiverPrivate.DECODER_QUEUE, None)
        if not isinstance(decoder_queue, queue.Queue):
            raise IncompatibleAiortcError("the receiver has no decoder queue")
        if getattr(self._receiver, ReceiverPrivate.DECODER_THREAD, None) is not None:
            raise RuntimeError("install the frame tap before the receiver starts")
        sink = self._sink

        def make(original: Callable[[Any], None]) -> Callable[[Any], None]:
            def _put(item: Any) -> None:
                if item is None:
                    original(item)  # stops aiortc's (idle) decoder thread
                else:
                    sink(int(item[1].timestamp))  # item: (codec, encoded frame)

            return _put

        self._hook = InstanceHook(decoder_queue, OtherPrivate.QUEUE_PUT, make)

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
