"""Stream helpers shared by the listener and the sender."""

from __future__ import annotations

import asyncio

CLOSE_TIMEOUT_SECONDS = 5.0
"""How long a close waits for the peer (a TLS close_notify) before aborting."""


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Close a connection; abort it if the peer does not let it close in time."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()
