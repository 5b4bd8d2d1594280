"""The bare-Celery baseline of bench/job_dispatch.py: a trivial task on the same Celery app and
queue as Lode's jobs (`cpu`, acks_late, no result), sent directly with `.delay()`, with no job row,
no API and no state machine. It records when it started and finished in a Redis hash, one field
per task, so the benchmark can compute start - sent for each one.

The benchmark's worker imports this module with `celery worker --include bench.celery_baseline`."""
from __future__ import annotations

import time

import redis
from django.conf import settings

from lode.celery import app

KEY_PREFIX = "lode:bench:job_dispatch:"
KEY_TTL_SECONDS = 3600

_client: redis.Redis | None = None


def redis_client() -> redis.Redis:
    """One connection pool per process (created lazily, so after the prefork pool has forked)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=10)
    return _client


def results_key(run_id: str) -> str:
    return f"{KEY_PREFIX}{run_id}"


@app.task(name="bench.baseline_ping", queue="cpu", acks_late=True, ignore_result=True)
def baseline_ping(run_id: str, index: int, sent_at: float) -> None:
    started = time.time()
    key = results_key(run_id)
    # "sent start finished", seconds since the epoch; finished is taken before the write, which is
    # the only work the task does.
    pipe = redis_client().pipeline(transaction=False)
    pipe.hset(key, str(index), f"{sent_at!r} {started!r} {time.time()!r}")
    pipe.expire(key, KEY_TTL_SECONDS)
    pipe.execute()


def results_read(run_id: str) -> dict[int, tuple[float, float, float]]:
    raw = redis_client().hgetall(results_key(run_id))
    out: dict[int, tuple[float, float, float]] = {}
    for field, value in raw.items():
        sent, started, finished = (float(x) for x in value.decode().split())
        out[int(field)] = (sent, started, finished)
    return out


def results_count(run_id: str) -> int:
    return int(redis_client().hlen(results_key(run_id)))


def results_delete(run_id: str) -> None:
    redis_client().delete(results_key(run_id))
