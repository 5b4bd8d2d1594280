"""Liveness, readiness and metrics endpoints (outside /api/v1/: load balancers and Prometheus
call them without credentials)."""
from __future__ import annotations

import ipaddress
import time

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from . import artifacts
from .errors import error_body


@transaction.non_atomic_requests
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


@transaction.non_atomic_requests
@require_GET
def readyz(request):
    checks = {"database": _check_database, "redis": _check_redis, "s3": artifacts.store_ping}
    results: dict[str, dict] = {}
    for name, check in checks.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # any failure of a dependency means "not ready"; say which and why
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            results[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    failing = [name for name, result in results.items() if not result["ok"]]
    if failing:
        return JsonResponse(
            error_body("not_ready", f"Not ready: {', '.join(failing)} unreachable", {"failing": failing, "checks": results}),
            status=503,
        )
    return JsonResponse({"status": "ready", "checks": results})


class _JobStateCollector:
    def collect(self):
        from .models import Job

        family = GaugeMetricFamily("lode_jobs", "Jobs by state and queue", labels=["state", "queue"])
        from tenants.db_context import dangerously_all_tenants

        # Platform-wide counts, no tenant's rows: the one place metrics read across tenants.
        for row in dangerously_all_tenants(Job).values("state", "queue").annotate(n=Count("id")).order_by():
            family.add_metric([row["state"], row["queue"]], row["n"])
        yield family


def _metrics_allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        return request.headers.get("Authorization", "") == f"Bearer {token}"
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@transaction.non_atomic_requests
@require_GET
def metrics(request):
    if not _metrics_allowed(request):
        return JsonResponse(error_body("permission_denied", "Metrics need the metrics token."), status=403)
    if settings.PROMETHEUS_MULTIPROC_DIR:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        process_metrics = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        process_metrics = generate_latest(REGISTRY)
    jobs_registry = CollectorRegistry()
    jobs_registry.register(_JobStateCollector())
    return HttpResponse(process_metrics + generate_latest(jobs_registry), content_type=CONTENT_TYPE_LATEST)
