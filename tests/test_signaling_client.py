import asyncio
import time

import pytest

from client.signaling_client import ServerUnreachable, connect_with_retry
from lab.programs import free_port


def test_retries_until_the_server_listens() -> None:
    async def scenario() -> float:
        port = free_port()

        async def late_server() -> asyncio.AbstractServer:
            await asyncio.sleep(0.8)
            return await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)

        starting = asyncio.create_task(late_server())
        began = time.monotonic()
        channel = await connect_with_retry("127.0.0.1", port, connect_timeout=5)
        elapsed = time.monotonic() - began
        await channel.close()
        (await starting).close()
        return elapsed

    assert 0.7 < asyncio.run(scenario()) < 3.0


def test_gives_up_after_the_timeout_with_a_reason() -> None:
    async def scenario() -> None:
        began = time.monotonic()
        with pytest.raises(ServerUnreachable, match="connection refused"):
            await connect_with_retry("127.0.0.1", free_port(), connect_timeout=0.5)
        assert time.monotonic() - began < 2.0

    asyncio.run(scenario())
