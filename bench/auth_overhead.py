"""Auth overhead benchmark: what PostgreSQL row-level security costs an authenticated list endpoint,
against the same endpoint with the RLS policies switched off and tenant scoping done only in Python,
in the same run, on the same web server.

    make up                                         # PostgreSQL, Redis, S3 (bash infra/services.sh up)
    .venv/bin/python bench/auth_overhead.py         # 20 rounds of 5 s per phase, about 5 minutes
    .venv/bin/python bench/auth_overhead.py --quick # 6 rounds of 4 s per phase, under two minutes
    .venv/bin/python bench/auth_overhead.py --restore   # only re-enable RLS (after a killed run)

The endpoint: GET /api/v1/jobs?page_size=50 with `Authorization: Bearer <API key>` (an owner's key
with every scope), 200 jobs in the key's organization and 200 in a second one. The script starts
its own web server (infra/web.sh: gunicorn, 2 workers x 4 threads, on a free loopback port) and
drives it with 16 keep-alive connections (wrk; installed with apt-get when missing and possible,
else a Python client with 16 threads, named in the output).

- RLS on (the project's path): the policies of core_job, tenants_apikey and tenants_membership are
  enforced (ENABLE + FORCE ROW LEVEL SECURITY, as the migrations left them), on top of the
  Python scoping.
- RLS off (the baseline): the same three tables get NO FORCE + DISABLE ROW LEVEL SECURITY (as the
  owner role); the policies stay defined but are not applied, so only the Python scoping remains
  (TenantScopedMixin's tenant filter, the key looked up by its prefix). The set_config calls of
  tenants.db_context still run: the difference measured is the policies' evaluation.

Rounds alternate on/off in pairs whose order flips (on off, off on, on off, ...) to spread machine
noise and drift over both phases; each switch is followed by a short warm-up. Every round first checks that the
phase took effect (pg_class.relrowsecurity / relforcerowsecurity, and whether a transaction scoped to
tenant A sees tenant B's jobs) and that the key of A lists only A's jobs over HTTP. The tables are
always put back to ENABLE + FORCE (in a `finally`; a run also repairs what a killed run left).
Figures are medians of the per-round values; ratio = RLS-on req/s / RLS-off req/s.

Throttling runs as usual with its rates raised (LODE_RATE_LIMIT_PER_KEY and _PER_ORGANIZATION =
1000000/s) so that no request is refused; the server runs with LODE_DEBUG=false, as in production.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lode.settings.dev")
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

TARGET_RATIO = 0.90
TARGET_TEXT = "RLS costs <10% of throughput (ratio>=0.90)"
# The tables an API-key request on the job list touches under RLS (memberships: the session path).
RLS_TABLES = ("core_job", "tenants_apikey", "tenants_membership")
LOCK_ORDER = ("tenants_apikey", "tenants_membership", "core_job")
PAGE_SIZE = 50
ENDPOINT = f"/api/v1/jobs?page_size={PAGE_SIZE}"
KEY_NAME = "bench auth_overhead"
TENANT_EMAILS = ("bench-auth-overhead-a@example.com", "bench-auth-overhead-b@example.com")
LOCK_NAME = "lode.bench.auth_overhead"  # a session advisory lock: one run at a time per database
THROTTLE_RATE = "1000000/s"  # DRF keeps one timestamp per request in the window: a 1 s window keeps it short


from bench.harness import (  # noqa: E402
    BenchError,
    Service,
    free_port,
    log,
    migrate,
    percentile,
    run_cli,
    start_service,
    tail,
    wait_web,
)


def database_url_labelled(application_name: str) -> str:
    """DATABASE_URL (as the settings read it) with application_name added."""
    from urllib.parse import quote, urlencode

    from django.conf import settings

    db = settings.DATABASES["default"]
    options = {**db.get("OPTIONS", {}), "application_name": application_name}
    return (f"postgres://{quote(db['USER'], safe='')}:{quote(db['PASSWORD'], safe='')}@{db['HOST']}:{db['PORT']}/"
            f"{quote(db['NAME'], safe='')}?{urlencode(options)}")


# --- row-level security on / off (as the owner role) ----------------------------------------------


def rls_lock() -> None:
    """One run at a time: a second run would put RLS back in the middle of this one's baseline."""
    from django.db import connections

    with connections["owner"].cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [LOCK_NAME])
        if not cursor.fetchone()[0]:
            raise BenchError("another auth_overhead run holds the database (advisory lock); wait for it to end")


def rls_state() -> dict[str, tuple[bool, bool]]:
    """table -> (relrowsecurity, relforcerowsecurity)."""
    from django.db import connections

    with connections["owner"].cursor() as cursor:
        cursor.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace AND relname = ANY(%s)",
            [list(RLS_TABLES)],
        )
        state = {name: (rls, force) for name, rls, force in cursor.fetchall()}
    missing = sorted(set(RLS_TABLES) - set(state))
    if missing:
        raise BenchError(f"tables missing from the database: {missing}")
    return state


def rls_policies_present() -> None:
    from django.db import connections

    with connections["owner"].cursor() as cursor:
        cursor.execute(
            "SELECT tablename FROM pg_policies WHERE schemaname = 'public' AND policyname = 'tenant_isolation' "
            "AND tablename = ANY(%s)", [list(RLS_TABLES)],
        )
        found = {row[0] for row in cursor.fetchall()}
    missing = sorted(set(RLS_TABLES) - found)
    if missing:
        raise BenchError(f"no tenant_isolation policy on {missing}: are the migrations applied?")


def wait_tables_idle(timeout: float = 10.0) -> None:
    """Waits until no other session holds a lock on the benchmark's tables: when wrk stops, the
    server is still answering the requests it had accepted."""
    from django.db import connections

    deadline = time.monotonic() + timeout
    with connections["owner"].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE pid <> pg_backend_pid() AND relation = ANY(%s::regclass[])",
                [list(RLS_TABLES)],
            )
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)


def rls_set(enabled: bool, attempts: int = 5) -> None:
    """enabled: ENABLE + FORCE, exactly as tenants.rls.EnableTenantRLS left the tables; otherwise
    NO FORCE + DISABLE (the policies stay defined; PostgreSQL just stops applying them)."""
    from django.db import OperationalError, connections, transaction

    if enabled:
        statements = [f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; ALTER TABLE {t} FORCE ROW LEVEL SECURITY;" for t in RLS_TABLES]
    else:
        statements = [f"ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY; ALTER TABLE {t} DISABLE ROW LEVEL SECURITY;" for t in RLS_TABLES]
    for attempt in range(1, attempts + 1):
        wait_tables_idle()
        try:
            with transaction.atomic(using="owner"), connections["owner"].cursor() as cursor:
                # ALTER TABLE waits for an ACCESS EXCLUSIVE lock; do not queue forever behind a
                # transaction someone left open on these tables.
                cursor.execute("SET LOCAL lock_timeout = '5s'")
                # All three at once, in the order a request takes them (key, then memberships or
                # jobs): a request still running cannot then deadlock with the ALTERs.
                cursor.execute(f"LOCK TABLE {', '.join(LOCK_ORDER)} IN ACCESS EXCLUSIVE MODE")
                for sql in statements:
                    cursor.execute(sql)
            break
        except OperationalError as exc:
            if attempt == attempts:
                raise BenchError(f"could not {'enable' if enabled else 'disable'} row-level security: {exc}") from exc
            log(f"  (ALTER TABLE did not get its lock: {str(exc).strip().splitlines()[0]}; retrying)")
            time.sleep(1.0)
    expected = (enabled, enabled)
    state = rls_state()
    wrong = {t: s for t, s in state.items() if s != expected}
    if wrong:
        raise BenchError(f"row-level security did not switch {'on' if enabled else 'off'}: {wrong}")


def rls_switch(enabled: bool) -> None:
    """rls_set, only when the tables are not in that state already."""
    if any(s != (enabled, enabled) for s in rls_state().values()):
        rls_set(enabled)


def phase_order(rounds: int) -> list[bool]:
    """True = RLS on. Pairs whose order flips (on off, off on, ...): a drift in the machine's speed
    weighs on both phases alike."""
    order: list[bool] = []
    for index in range(rounds):
        order += [True, False] if index % 2 == 0 else [False, True]
    return order


def rls_restore(reason: str) -> bool:
    """Puts ENABLE + FORCE back on every table that lacks it; True when something was repaired."""
    state = rls_state()
    off = sorted(t for t, s in state.items() if s != (True, True))
    if not off:
        return False
    log(f"{reason}: row-level security was off on {off}; re-enabling (ENABLE + FORCE) ...")
    rls_set(True)
    return True


# --- data: two tenants, an API key each, jobs --------------------------------------------------------


@dataclass
class Tenant:
    email: str
    user: object
    tenant_id: str
    key_id: str = ""
    key: str = ""
    job_ids: set[str] = field(default_factory=set)


def tenant_prepare(email: str, label: str, jobs: int) -> Tenant:
    """The tenant of a fixed user (reused across runs, so the table's shape stays the same), with at
    least `jobs` jobs and a fresh API key holding every permission of the owner role."""
    import secrets
    from datetime import timedelta

    from django.utils import timezone

    from lode.core.models import Job, JobState
    from tenants.db_context import dangerously_all_tenants
    from tenants.models import ApiKey, Membership, Role, User
    from tenants.permissions import ROLE_PERMISSIONS
    from tenants.services import api_key_create, api_key_revoke, user_signup

    user = User.objects.filter(email=email).first()
    membership = None
    if user is not None:
        membership = (
            dangerously_all_tenants(Membership).filter(user=user, role=Role.OWNER).order_by("created_at").first()
        )
    if membership is None:
        if user is not None:
            raise BenchError(f"{email} exists but owns no organization; remove it or pick another address")
        result = user_signup(
            email=email, password=f"Bench-{secrets.token_urlsafe(24)}", organization_name=f"Bench auth_overhead {label}",
        )
        user, tenant_id = result.user, str(result.organization.id)
    else:
        tenant_id = str(membership.organization_id)

    # Rows of every tenant are read and written through the system role (BYPASSRLS) and the
    # unscoped base manager: the default managers may scope to the transaction's tenant.
    jobs_of = dangerously_all_tenants(Job).filter(tenant_id=tenant_id)
    have = jobs_of.count()
    if have < jobs:
        # Inserted directly: no Celery message, no job machinery; the list endpoint only reads them.
        now = timezone.now()
        dangerously_all_tenants(Job).bulk_create([
            Job(tenant_id=tenant_id, created_by=user, kind="core.ping", queue="cpu", state=JobState.SUCCEEDED,
                progress=1.0, created_at=now - timedelta(seconds=index), started_at=now, finished_at=now)
            for index in range(jobs - have)
        ], batch_size=500)
    elif have > jobs:
        # The benchmark's own tenant: keep exactly `jobs` rows, so runs stay comparable.
        extra = list(jobs_of.order_by("created_at", "id").values_list("id", flat=True)[: have - jobs])
        dangerously_all_tenants(Job).filter(id__in=extra).delete()
    # Keys an earlier run could not revoke (it was killed); no other run uses them (rls_lock).
    for stale in dangerously_all_tenants(ApiKey).filter(tenant_id=tenant_id, name__startswith=KEY_NAME, revoked_at__isnull=True):
        api_key_revoke(tenant_id=tenant_id, api_key_id=stale.id, by=user)
    permissions = ROLE_PERMISSIONS[Role.OWNER]
    created = api_key_create(
        tenant_id=tenant_id, created_by=user, creator_permissions=permissions,
        name=f"{KEY_NAME} {os.getpid()}", scopes=sorted(permissions),
    )
    return Tenant(
        email=email, user=user, tenant_id=tenant_id, key_id=str(created.api_key.id), key=created.secret,
        job_ids={str(pk) for pk in jobs_of.values_list("id", flat=True)},
    )


def keys_revoke(tenants: list[Tenant]) -> None:
    from tenants.services import api_key_revoke

    for tenant in tenants:
        if tenant.key_id:
            try:
                api_key_revoke(tenant_id=tenant.tenant_id, api_key_id=tenant.key_id, by=tenant.user)
            except Exception as exc:  # clean-up: report, do not mask the run's own error
                log(f"WARNING: could not revoke the benchmark's API key {tenant.key_id}: {exc}")


# --- checks ----------------------------------------------------------------------------------------------


def check_phase(enabled: bool, a: Tenant, b: Tenant, base_url: str) -> None:
    """The phase took effect in PostgreSQL, and A's key lists A's jobs and only those over HTTP."""
    import requests

    from lode.core.models import Job
    from tenants.db_context import tenant_atomic

    state = rls_state()
    if any(s != (enabled, enabled) for s in state.values()):
        raise BenchError(f"expected row-level security {'on' if enabled else 'off'}, pg_class says {state}")
    # The application role, scoped to A, asks for B's rows (through the unscoped base manager, so
    # that only the policy can hide them): the policy hides them, or not.
    with tenant_atomic(a.tenant_id):
        foreign = Job._base_manager.filter(tenant_id=b.tenant_id).count()
    if enabled and foreign != 0:
        raise BenchError(f"with RLS on, a transaction scoped to tenant A sees {foreign} of tenant B's jobs")
    if not enabled and foreign != len(b.job_ids):
        raise BenchError(f"with RLS off, a transaction scoped to tenant A should see all {len(b.job_ids)} of B's jobs "
                         f"(the policy no longer applies), saw {foreign}")
    for tenant, other in ((a, b), (b, a)):
        response = requests.get(base_url + ENDPOINT, headers={"Authorization": f"Bearer {tenant.key}"}, timeout=30)
        if response.status_code != 200:
            raise BenchError(f"GET {ENDPOINT} with {tenant.email}'s key: HTTP {response.status_code}: {response.text[:300]}")
        ids = {row["id"] for row in response.json()["results"]}
        if ids & other.job_ids or not ids <= tenant.job_ids:
            raise BenchError(f"ISOLATION FAILURE: {tenant.email}'s key listed {len(ids & other.job_ids)} of another tenant's jobs")
        if len(ids) != min(PAGE_SIZE, len(tenant.job_ids)):
            raise BenchError(f"{tenant.email}'s key listed {len(ids)} jobs, expected {min(PAGE_SIZE, len(tenant.job_ids))}")
    anonymous = requests.get(base_url + ENDPOINT, timeout=30)
    if anonymous.status_code != 401:
        raise BenchError(f"GET {ENDPOINT} without a key answered HTTP {anonymous.status_code}, expected 401")


# --- load ------------------------------------------------------------------------------------------------


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: str  # empty when every response was a 200 and no socket failed

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


WRK_SCRIPT = r"""
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer __KEY__"
wrk.headers["Accept"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non200 = 0; last_status = 0 end
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1; last_status = status end
end
function done(summary, latency, requests)
  local bad, last = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non200")
    if t:get("last_status") ~= 0 then last = t:get("last_status") end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "non200": %d, "last_status": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.connect, e.read,
    e.write, e.status, e.timeout, bad, last))
end
"""


def wrk_ensure() -> str | None:
    """The path of wrk, installing the Debian package when missing and apt-get is usable (as root)."""
    found = shutil.which("wrk")
    if found or shutil.which("apt-get") is None or os.geteuid() != 0:
        return found
    log("wrk is missing: apt-get install -y wrk ...")
    for commands in ([["apt-get", "install", "-y", "-q", "wrk"]],
                     [["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]]):
        try:
            if all(subprocess.run(c, capture_output=True, timeout=300,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}).returncode == 0 for c in commands):
                break
        except (OSError, subprocess.TimeoutExpired):
            pass
    return shutil.which("wrk")


class WrkClient:
    name = "wrk"

    def __init__(self, binary: str, key: str, log_dir: Path, connections: int):
        self.binary = binary
        self.connections = connections
        self.script = log_dir / "auth.lua"
        self.script.write_text(WRK_SCRIPT.replace("__KEY__", key))
        self.script.chmod(0o600)

    def describe(self) -> str:
        return f"wrk, {self.connections} keep-alive connections on 2 threads"

    def run(self, url: str, seconds: float) -> Load:
        args = [self.binary, "-t", "2", "-c", str(self.connections), "-d", f"{max(1, round(seconds))}s",
                "--timeout", "10s", "--latency", "-s", str(self.script), url]
        done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
        if done.returncode != 0 or line is None:
            raise BenchError(f"wrk failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        data = json.loads(line[len("WRKJSON "):])
        problems = [f"{data[k]} {k} errors" for k in ("connect", "read", "write", "timeout") if data[k]]
        if data["non200"] or data["status"]:
            problems.append(f"{max(data['non200'], data['status'])} non-200 responses (e.g. HTTP {data['last_status']})")
        return Load(requests=data["requests"], seconds=data["duration_us"] / 1e6, p50_ms=data["p50_us"] / 1000,
                    p99_ms=data["p99_us"] / 1000, errors="; ".join(problems))


class PythonClient:
    """The fallback: N threads, each with its own keep-alive connection, as fast as they can. They
    share the machine (and one GIL) with the server: figures read lower than wrk's."""

    name = "python"

    def __init__(self, key: str, connections: int, reason: str):
        self.key = key
        self.connections = connections
        self.reason = reason

    def describe(self) -> str:
        return f"Python client ({self.reason}): {self.connections} threads, one keep-alive connection each"

    def run(self, url: str, seconds: float) -> Load:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        lock = threading.Lock()
        latencies: list[float] = []
        failures: dict[str, int] = {}
        start = time.perf_counter()
        stop = start + seconds
        ends: list[float] = []

        def worker() -> None:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            mine: list[float] = []
            bad: dict[str, int] = {}
            while True:
                began = time.perf_counter()
                if began >= stop:
                    break
                try:
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        bad[f"HTTP {response.status}"] = bad.get(f"HTTP {response.status}", 0) + 1
                    else:
                        mine.append((time.perf_counter() - began) * 1000)
                except (OSError, http.client.HTTPException) as exc:
                    bad[type(exc).__name__] = bad.get(type(exc).__name__, 0) + 1
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            conn.close()
            with lock:
                latencies.extend(mine)
                ends.append(time.perf_counter())
                for k, v in bad.items():
                    failures[k] = failures.get(k, 0) + v

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return Load(requests=len(latencies) + sum(failures.values()), seconds=max(ends) - start,
                    p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
                    errors="; ".join(f"{v} x {k}" for k, v in sorted(failures.items())))


# --- CPU used by the server ----------------------------------------------------------------------------------


def _cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of proc(5))
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(x) for x in handle.read().split()]
    except OSError:
        pass
    return found


class CpuMeter:
    """CPU time of the processes that serve the benchmark's requests: gunicorn (master and
    workers) and the PostgreSQL backends it connected with (found by their application_name).
    Read from /proc every 0.2 s, so the work of a backend that exits (CONN_MAX_AGE) is kept. Other
    processes on the machine do not count: CPU per request is not skewed by them the way req/s is
    (not entirely: they still share caches and cores)."""

    def __init__(self, gunicorn_pid: int, application_name: str):
        self.gunicorn_pid = gunicorn_pid
        self.application_name = application_name
        self.latest: dict[int, int] = {}
        self.backend_pids: set[int] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.available = os.path.exists(f"/proc/{gunicorn_pid}/stat")
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        if self.available:
            self.thread.start()

    def _backends(self, cursor) -> list[int]:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [self.application_name])
        return [row[0] for row in cursor.fetchall()]

    def _sample(self, cursor) -> None:
        backends = self._backends(cursor)
        pids = [self.gunicorn_pid, *_children(self.gunicorn_pid), *backends]
        values = {pid: ticks for pid in pids if (ticks := _cpu_ticks(pid)) is not None}
        with self.lock:
            self.latest.update(values)
            self.backend_pids.update(backends)

    def _loop(self) -> None:
        import psycopg2
        from django.conf import settings

        db = settings.DATABASES["owner"]
        conn = psycopg2.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"],
                                port=db["PORT"], application_name="lode-bench-auth-overhead-meter")
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                while not self.stopping.is_set():
                    self._sample(cursor)
                    self.stopping.wait(0.2)
        finally:
            conn.close()

    def snapshot(self) -> dict[int, int]:
        if not self.available:
            return {}
        time.sleep(0.25)  # one more sample after the load stopped
        with self.lock:
            return dict(self.latest)

    def seconds(self, before: dict[int, int], after: dict[int, int]) -> tuple[float, float]:
        """(gunicorn, PostgreSQL backends) CPU seconds between two snapshots."""
        tick = os.sysconf("SC_CLK_TCK")
        with self.lock:
            backends = set(self.backend_pids)
        used = {pid: ticks - before.get(pid, 0) for pid, ticks in after.items()}
        return (sum(v for pid, v in used.items() if pid not in backends) / tick,
                sum(v for pid, v in used.items() if pid in backends) / tick)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


# --- the database side alone -----------------------------------------------------------------------------


def request_statements(tenant: Tenant) -> list[str]:
    """The SQL the endpoint runs for one request, as sent to PostgreSQL (parameters inlined): the
    key looked up by prefix (tenants.services.api_key_authenticate), the tenant context
    (tenants.context.access_for_api_key), the first page of jobs as the cursor pagination asks
    for it. Captured from the project's own functions, not written by hand."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from lode.core.models import Job
    from tenants.context import access_for_api_key
    from tenants.services import api_key_authenticate

    class _Request:  # access_for_api_key only records the access on it
        pass

    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        api_key = api_key_authenticate(raw_key=tenant.key, ip="127.0.0.1")
        access_for_api_key(_Request(), api_key)
        # As JobListCreateApi builds it: the default manager, TenantScopedMixin's tenant filter, the
        # cursor pagination's ordering and page size + 1.
        rows = list(Job.objects.all().filter(tenant_id=tenant.tenant_id).order_by("-created_at", "-id")[:PAGE_SIZE + 1])
    if len(rows) != min(PAGE_SIZE + 1, len(tenant.job_ids)):
        raise BenchError(f"the captured job query returned {len(rows)} rows")
    skip = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
    return [q["sql"] for q in captured.captured_queries if not q["sql"].lstrip().upper().startswith(skip)]


def sql_replay(statements: list[str], iterations: int) -> float:
    """Microseconds per request for the statements run `iterations` times inside PostgreSQL (one
    DO block, as the application role): each EXECUTE is parsed and planned afresh, as the app's
    statements are (no prepared statements), and no client round trip or scheduling is timed, so
    the policies' share of the work stands out."""
    from django.db import connection

    tag = "$lode_bench$"
    if any(tag in sql for sql in statements):
        raise BenchError("a captured statement contains the DO block's quoting tag")
    body = " ".join(f"EXECUTE {tag}{sql}{tag};" for sql in statements)
    block = f"DO $do$ BEGIN FOR i IN 1..{int(iterations)} LOOP {body} END LOOP; END $do$"
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        cursor.execute("BEGIN")  # set_config(..., true) lasts until the end of this transaction
        try:
            began = time.perf_counter()
            cursor.execute(block)
            return (time.perf_counter() - began) / iterations * 1e6
        finally:
            cursor.execute("ROLLBACK")


# --- report ------------------------------------------------------------------------------------------------


@dataclass
class Round:
    index: int
    enabled: bool
    load: Load
    cpu: tuple[float, float] | None  # CPU seconds of gunicorn and of its PostgreSQL backends during the load

    def _per_request(self, value: float) -> float | None:
        return value / self.load.requests * 1000 if self.cpu and self.load.requests else None

    @property
    def cpu_ms_per_request(self) -> float | None:
        return self._per_request(sum(self.cpu)) if self.cpu else None

    @property
    def app_ms_per_request(self) -> float | None:
        return self._per_request(self.cpu[0]) if self.cpu else None

    @property
    def db_ms_per_request(self) -> float | None:
        return self._per_request(self.cpu[1]) if self.cpu else None


def report(rounds: list[Round], sql: list[tuple[bool, float]], args: argparse.Namespace, client_text: str, jobs: int,
           statements: int, load_before: float) -> None:
    on = [r.load for r in rounds if r.enabled]
    off = [r.load for r in rounds if not r.enabled]

    def med(items: list[Load], attr: str) -> float:
        return statistics.median(getattr(item, attr) for item in items)

    on_rps, off_rps = med(on, "rps"), med(off, "rps")
    ratio = on_rps / off_rps if off_rps > 0 else float("inf")
    log("")
    log(f"auth_overhead: GET {ENDPOINT}, Bearer API key (owner, all scopes), {jobs} jobs in each of 2 tenants;")
    log(f"  gunicorn {args.workers} workers x 4 threads on 127.0.0.1 (LODE_DEBUG=false); {client_text};")
    log(f"  {len(on)} round(s) per phase of {args.seconds:g} s ({args.warmup:g} s of warm-up after each switch), in the order "
        + " ".join("on" if r.enabled else "off" for r in rounds) + "; figures are medians of the per-round values.")
    log(f"  RLS on : the project's path, policies enforced (ENABLE + FORCE) on {', '.join(RLS_TABLES)}.")
    log("  RLS off: the same tables NO FORCE + DISABLE: scoping only in Python (TenantScopedMixin, key lookup by prefix).")
    log("           The set_config calls run in both phases: the difference is the policies' evaluation.")
    log(f"  {os.cpu_count()} CPUs; 1-minute load average before the server started: {load_before:.2f}"
        + (" (other processes were busy: expect noise)" if load_before > 0.5 else ""))
    log("")
    log(f"{'phase':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    log(f"{'RLS on':<10} {on_rps:>9.1f} {med(on, 'p50_ms'):>8.2f} {med(on, 'p99_ms'):>8.2f}")
    log(f"{'RLS off':<10} {off_rps:>9.1f} {med(off, 'p50_ms'):>8.2f} {med(off, 'p99_ms'):>8.2f}")
    log(f"ratio on/off: throughput {ratio:.3f} (RLS costs {(1 - ratio) * 100:.1f}% of throughput), "
        f"p50 {med(on, 'p50_ms') / med(off, 'p50_ms'):.3f}x, p99 {med(on, 'p99_ms') / med(off, 'p99_ms'):.3f}x")
    # Each on round against the off round it was paired with (neighbours in time).
    pairs = [(rounds[i].load, rounds[i + 1].load) if rounds[i].enabled else (rounds[i + 1].load, rounds[i].load)
             for i in range(0, len(rounds) - 1, 2)]
    pair_ratios = [x.rps / y.rps for x, y in pairs if y.rps > 0]
    log("per-pair throughput ratios (on/off, neighbours in time): " + ", ".join(f"{x:.3f}" for x in pair_ratios)
        + f" (median {statistics.median(pair_ratios):.3f})")
    spread = {
        name: (min(x.rps for x in items), max(x.rps for x in items), statistics.pstdev(x.rps for x in items) / med(items, "rps"))
        for name, items in (("on", on), ("off", off))
    }
    log("per-round req/s spread: " + ", ".join(f"{name} {lo:.0f}-{hi:.0f} (CV {cv * 100:.0f}%)" for name, (lo, hi, cv) in spread.items()))
    if max(cv for _, _, cv in spread.values()) > 0.05:
        log("  NOTE: the rounds of one phase vary by more than 5%, more than the effect sought: other processes on the"
            " machine shaped these req/s; the database figure below is the steadier view of what the policies cost.")
    measured = [r for r in rounds if r.cpu_ms_per_request]
    c_off = None
    if any(r.enabled for r in measured) and any(not r.enabled for r in measured):

        def cpu_figures(attr: str) -> tuple[float, float, float]:
            on_ = statistics.median(getattr(r, attr) for r in measured if r.enabled)
            off_ = statistics.median(getattr(r, attr) for r in measured if not r.enabled)
            diffs = [
                (getattr(x, attr) - getattr(y, attr)) if x.enabled else (getattr(y, attr) - getattr(x, attr))
                for x, y in zip(rounds[0::2], rounds[1::2]) if x.cpu and y.cpu
            ]
            return on_, off_, statistics.median(diffs)

        c_on, c_off, c_diff = cpu_figures("cpu_ms_per_request")
        a_on, a_off, a_diff = cpu_figures("app_ms_per_request")
        d_on, d_off, d_diff = cpu_figures("db_ms_per_request")
        log(f"server CPU per request (other processes do not count): RLS on {c_on:.2f} ms, off {c_off:.2f} ms -> "
            f"capacity ratio on/off {c_off / c_on:.3f}; median of the pairs' differences {c_diff:+.2f} ms, of which")
        log(f"  gunicorn (Python: the same work in both phases) on {a_on:.2f} / off {a_off:.2f} ms, pairs {a_diff:+.2f} ms;"
            f" its PostgreSQL backends on {d_on:.2f} / off {d_off:.2f} ms, pairs {d_diff:+.2f} ms")
    sql_on = statistics.median(us for enabled, us in sql if enabled)
    sql_off = statistics.median(us for enabled, us in sql if not enabled)
    sql_diff = statistics.median(
        (sql[i][1] - sql[i + 1][1]) if sql[i][0] else (sql[i + 1][1] - sql[i][1]) for i in range(0, len(sql) - 1, 2)
    )
    log(f"database side alone: the endpoint's {statements} statements run in a loop inside PostgreSQL as the application "
        f"role, planned each time ({len(sql) // 2} on/off pairs): RLS on {sql_on:.0f} us, off {sql_off:.0f} us per request;")
    log(f"  the policies cost {sql_diff:+.0f} us per request (median of the pairs' differences, "
        f"{sql_diff / sql_off * 100:+.1f}% of those statements' planning and execution);")
    if c_off:
        log(f"  that is {sql_diff / 1000 / c_off * 100:+.1f}% of the server CPU a request costs with RLS off ({c_off:.2f} ms).")
    log("rounds:")
    for r in rounds:
        cpu = (f"  CPU {r.cpu_ms_per_request:5.2f} ms/req (gunicorn {r.app_ms_per_request:5.2f}, PostgreSQL "
               f"{r.db_ms_per_request:4.2f})" if r.cpu_ms_per_request else "")
        log(f"  {r.index:>2} {'on ' if r.enabled else 'off'}  {r.load.rps:8.1f} req/s  p50 {r.load.p50_ms:6.2f} ms  "
            f"p99 {r.load.p99_ms:6.2f} ms{cpu}  ({r.load.requests} requests in {r.load.seconds:.1f} s)")
    log("  database side alone, us/request: " + ", ".join(f"{'on' if e else 'off'} {us:.0f}" for e, us in sql))
    met = ratio >= TARGET_RATIO
    log(f'BENCH auth_overhead rps={on_rps:.1f} baseline={off_rps:.1f} ratio={ratio:.3f} '
        f'target="{TARGET_TEXT}" met={"yes" if met else "no"}')


# --- main ------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    if args.restore:
        import django

        django.setup()
        rls_lock()
        if not rls_restore("--restore"):
            log(f"row-level security is on (ENABLE + FORCE) on {', '.join(RLS_TABLES)}; nothing to do")
        return

    load_before = os.getloadavg()[0]
    seconds_default, warmup_default, rounds_default, sql_default = (4.0, 1.0, 6, 500) if args.quick else (5.0, 1.0, 20, 1000)
    args.seconds = args.seconds or seconds_default
    args.warmup = args.warmup if args.warmup is not None else warmup_default
    args.rounds = args.rounds or rounds_default
    args.sql_iterations = args.sql_iterations or sql_default
    jobs = args.jobs
    migrate()

    import django

    django.setup()
    rls_lock()
    rls_policies_present()
    rls_restore("a previous run did not finish")

    wrk = None if args.client == "python" else wrk_ensure()
    if args.client == "wrk" and wrk is None:
        raise BenchError("--client wrk: wrk is not installed and could not be installed")

    log_dir = Path(tempfile.mkdtemp(prefix="lode-bench-auth-overhead-"))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env["LODE_WEB_PORT"] = str(port)
    env["LODE_WEB_WORKERS"] = str(args.workers)
    env["LODE_DEBUG"] = "false"
    env["LODE_RATE_LIMIT_PER_KEY"] = THROTTLE_RATE
    env["LODE_RATE_LIMIT_PER_ORGANIZATION"] = THROTTLE_RATE
    env["PROMETHEUS_MULTIPROC_DIR"] = str(log_dir / "prometheus")  # web.sh empties it: keep it ours
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "platform"), env.get("PYTHONPATH", "")) if p)
    # The same database and role, labelled so the CPU meter finds the server's backends.
    application_name = f"lode-bench-auth-overhead-{os.getpid()}"
    env["DATABASE_URL"] = database_url_labelled(application_name)

    tenants: list[Tenant] = []
    meter: CpuMeter | None = None
    web: Service | None = None
    ok = False
    try:
        log(f"preparing two tenants with {jobs} jobs each and an API key each ...")
        for email, label in zip(TENANT_EMAILS, "AB"):
            tenants.append(tenant_prepare(email, label, jobs))
        a, b = tenants
        jobs = min(len(a.job_ids), len(b.job_ids))
        log(f"starting the web server on {base_url} (logs in {log_dir}) ...")
        web = start_service("web", ["bash", "infra/web.sh"], env, log_dir)
        wait_web(web, base_url)
        meter = CpuMeter(web.proc.pid, application_name)
        meter.start()

        client = (WrkClient(wrk, a.key, log_dir, args.connections) if wrk else
                  PythonClient(a.key, args.connections, "--client python" if args.client == "python" else "wrk unavailable"))
        log(f"load: {client.describe()}")
        url = base_url + ENDPOINT

        log("checking isolation with RLS on (the migrations' state) ...")
        check_phase(True, a, b, base_url)
        log("warming up ...")
        warm = client.run(url, max(args.warmup, 3.0))
        if warm.errors:
            raise BenchError(f"warm-up: {warm.errors}\n{tail(web.log_path)}")

        order = phase_order(args.rounds)
        rounds: list[Round] = []
        previous = None
        for index, enabled in enumerate(order, start=1):
            rls_switch(enabled)
            check_phase(enabled, a, b, base_url)
            # A warm-up only after a switch (the backends reload the tables' descriptions): the
            # two rounds of a pair stay close in time.
            if args.warmup > 0 and enabled != previous:
                warm = client.run(url, args.warmup)
                if warm.errors:
                    raise BenchError(f"round {index}'s warm-up: {warm.errors}\n{tail(web.log_path)}")
            before = meter.snapshot()
            load = client.run(url, args.seconds)
            cpu = meter.seconds(before, meter.snapshot()) if meter.available else None
            if load.errors:
                raise BenchError(f"round {index} (RLS {'on' if enabled else 'off'}): {load.errors}\n{tail(web.log_path)}")
            if not web.alive():
                raise BenchError(f"the web server exited during the run:\n{tail(web.log_path)}")
            rounds.append(Round(index, enabled, load, cpu))
            previous = enabled
            log(f"round {index}/{len(order)} RLS {'on ' if enabled else 'off'}: {load.rps:.1f} req/s, "
                f"p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms"
                + (f", server CPU {rounds[-1].cpu_ms_per_request:.2f} ms/request" if rounds[-1].cpu_ms_per_request else ""))

        statements = request_statements(a)
        sql_pairs = 8 if args.quick else 20
        log(f"database side alone: the endpoint's {len(statements)} statements, {sql_pairs} on/off pairs of "
            f"{args.sql_iterations} requests' worth ...")
        sql: list[tuple[bool, float]] = []
        for enabled in phase_order(sql_pairs):
            rls_switch(enabled)
            check_phase(enabled, a, b, base_url)
            sql_replay(statements, max(10, args.sql_iterations // 10))  # warm-up (the tables' descriptions, reloaded)
            sql.append((enabled, sql_replay(statements, args.sql_iterations)))
        rls_switch(True)
        check_phase(True, a, b, base_url)
        report(rounds, sql, args, client.describe(), jobs, len(statements), load_before)
        ok = True
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Whatever happened, the tables end as the migrations left them.
        try:
            rls_restore("clean-up")
        except Exception as exc:
            print(f"ERROR: could not re-enable row-level security: {exc}\n  run: .venv/bin/python bench/auth_overhead.py"
                  f" --restore   (or as lode_owner: ALTER TABLE <t> ENABLE ROW LEVEL SECURITY; ALTER TABLE <t> FORCE"
                  f" ROW LEVEL SECURITY; for {', '.join(RLS_TABLES)})", file=sys.stderr, flush=True)
        if meter is not None:
            meter.stop()
        if web is not None:
            web.stop()
        keys_revoke(tenants)
        (log_dir / "auth.lua").unlink(missing_ok=True)  # holds a (now revoked) key
        if ok and not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 rounds of 4 s per phase instead of 20 of 5 s")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per phase (default 20, --quick 6)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of load per round (default 5, --quick 4)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of unmeasured load after each switch (default 1)")
    parser.add_argument("--sql-iterations", type=int, default=None,
                        help="requests' worth of SQL per database-only round (default 1000, --quick 500)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive clients (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, 4 threads each (default 2, as infra/web.sh)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per tenant (default 200)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk (installed if missing), else the Python fallback (default auto)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the web server's log folder after a successful run")
    parser.add_argument("--restore", action="store_true", help="only re-enable RLS on the benchmark's tables, then exit")
    args = parser.parse_args()
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")

    return run_cli("auth_overhead", run, args, interrupted="interrupted; processes stopped, row-level security restored")


if __name__ == "__main__":
    sys.exit(main())
