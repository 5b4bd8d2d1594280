"""`core.ping`: a diagnostics job that checks a queue end to end (dispatch, a worker, progress,
cancellation, failure reporting) without touching any model. Operators use it to probe a queue's
health and latency; the job-dispatch benchmark uses it as its trivial job."""
from __future__ import annotations

import time
from typing import Any

from lode.core.errors import ValidationFailed


def ping_params_validate(params: dict[str, Any]) -> dict[str, Any]:
    allowed = {"steps", "sleep_seconds", "fail_with"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValidationFailed(f"params: unknown parameter {unknown[0]!r}", details={"field": f"params.{unknown[0]}"})
    steps = params.get("steps", 1)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
        raise ValidationFailed("params.steps: must be an integer from 1 to 1000", details={"field": "params.steps"})
    sleep_seconds = params.get("sleep_seconds", 0)
    if not isinstance(sleep_seconds, (int, float)) or isinstance(sleep_seconds, bool) or not 0 <= sleep_seconds <= 60:
        raise ValidationFailed("params.sleep_seconds: must be a number from 0 to 60", details={"field": "params.sleep_seconds"})
    fail_with = params.get("fail_with")
    if fail_with is not None and (not isinstance(fail_with, str) or len(fail_with) > 500):
        raise ValidationFailed("params.fail_with: must be a string of at most 500 characters", details={"field": "params.fail_with"})
    clean: dict[str, Any] = {"steps": steps, "sleep_seconds": sleep_seconds}
    if fail_with:
        clean["fail_with"] = fail_with
    return clean


def ping_usage_estimate(params: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """A gpu ping holds its worker for about steps x sleep_seconds."""
    from django.conf import settings

    return [("gpu_seconds", settings.GPU_CLASS, round(params["steps"] * params["sleep_seconds"], 6))]


class PingFailure(RuntimeError):
    """The failure a ping job was asked to report."""


def ping_run(ctx, params: dict[str, Any]) -> dict[str, Any]:
    steps = params.get("steps", 1)
    done = int(ctx.checkpoint.get("step", 0))
    started = time.perf_counter()
    for step in range(done + 1, steps + 1):
        ctx.check_cancelled(every_seconds=0.5)
        if params.get("sleep_seconds"):
            time.sleep(params["sleep_seconds"])
        if steps > 1:
            ctx.save_checkpoint({"step": step})
            ctx.progress(step / steps, f"step {step}/{steps}")
    if params.get("fail_with"):
        raise PingFailure(params["fail_with"])
    return {"steps": steps, "resumed_from_step": done, "worker": ctx.worker, "seconds": round(time.perf_counter() - started, 4)}
