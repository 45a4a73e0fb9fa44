"""The webhook retry delays: doubling from retry_first, capped at retry_max, jittered in the upper half."""

from __future__ import annotations

import random

from events.webhooks import WebhookSettings, backoff


def test_delays_double_up_to_the_cap_and_spread_over_the_upper_half() -> None:
    settings = WebhookSettings(retry_first=5, retry_max=900)
    rng = random.Random(1)
    for attempts, full in ((1, 5), (2, 10), (3, 20), (8, 640), (9, 900), (40, 900)):
        delays = [backoff(settings, attempts, rng) for _ in range(200)]
        assert all(full / 2 <= delay <= full for delay in delays), attempts
        # Spread, not one instant: a receiver that comes back is not hit by every lead at once.
        assert max(delays) - min(delays) > full / 4
