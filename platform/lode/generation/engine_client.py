"""The web tier's side of the generation server (workers/generation/server.py): a request goes onto
a Redis list, and its text comes back as events on a reply list of its own.

`engine_request()` yields {"delta": "..."} events then one {"done": True, "finish_reason", "usage",
"error"}; ServiceUnavailable (503) when no server answers within the timeout."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings

from lode.core.errors import ServiceUnavailable

REQUESTS_KEY = "lode:generation:requests"


def _client():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


def engine_request(payload: dict[str, Any], *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
    timeout = timeout if timeout is not None else settings.GENERATION_TIMEOUT_SECONDS
    client = _client()
    request_id = uuid.uuid4().hex
    reply = f"lode:generation:reply:{request_id}"
    deadline = time.time() + timeout
    client.rpush(REQUESTS_KEY, json.dumps({**payload, "id": request_id, "reply": reply, "deadline": deadline}))
    try:
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise ServiceUnavailable("generation: no answer from the generation service in time",
                                         details={"timeout_seconds": timeout})
            # Below the client's socket timeout (5 s by default in redis-py): a longer block would read as a timeout.
            item = client.blpop([reply], timeout=max(1, int(min(left, 2))))
            if item is None:
                continue
            event = json.loads(item[1])
            yield event
            if event.get("done"):
                return
    finally:
        client.delete(reply)
        client.close()
