"""Requests per minute per client: a token bucket each, in this process's memory."""

from __future__ import annotations

import math
import threading
import time

from hub.errors import TooManyRequests


class RateLimiter:
    """Allows each client `per_minute` requests a minute, in bursts of up to `per_minute`."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client_id: str) -> None:
        """Use one request of `client_id`'s allowance, or raise TooManyRequests."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(client_id, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.refill_per_second)
            if tokens < 1:
                wait = math.ceil((1 - tokens) / self.refill_per_second)
                self._buckets[client_id] = (tokens, now)
                raise TooManyRequests(
                    f"Client '{client_id}' is over its limit of {int(self.capacity)} requests "
                    f"a minute; retry in {wait} s.",
                    headers={"Retry-After": str(wait)},
                )
            self._buckets[client_id] = (tokens - 1, now)
