"""Job dispatch benchmark: how long a trivial job waits between its commit and a worker starting it,
and how many such jobs per second the whole path carries, against bare Celery in the same run.

    make up                                    # PostgreSQL, Redis, S3 (bash infra/services.sh up)
    .venv/bin/python bench/job_dispatch.py     # 200 jobs x 3 rounds
    .venv/bin/python bench/job_dispatch.py --quick   # 50 jobs x 3 rounds

The script starts its own web server (infra/web.sh, on a free port) and ONE Celery worker for the
`cpu` queue (infra/worker.sh cpu), and stops both at the end. Both paths use that same worker.

- Lode: a fresh user signs up through the API and signs in once (a session: HTTP Basic would
  re-hash the password with Argon2 on every request, ~100 ms that is not the job mechanism's);
  one HTTP client (keep-alive) submits N `core.ping` jobs with POST /api/v1/jobs as fast as it
  can. Latency per job is Job.started_at - Job.dispatched_at from the database rows:
  dispatched_at is taken in the job's on-commit callback, just before the Celery message is
  sent (the moment the transaction committed), started_at when the worker claims the job.
- Bare Celery: a trivial task on the same app, queue and worker (bench/celery_baseline.py), sent
  with .delay(); latency is its start time minus the time taken just before .delay().
  * "same schedule": after each Lode round, N tasks sent at the moments that round's messages were
    sent (its jobs' dispatched_at, relative to the first), so both paths see the same arrival rate
    and the latency ratio is the mechanism's overhead, not queueing. The baseline of the BENCH line.
  * "burst": N sent back to back: the bare queue's capacity (throughput).
Throughput: jobs per second from the first submission to the last job finished.
Each figure is the median over the rounds of the per-round value.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lode.settings.dev")
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

TARGET_P50_MS = 100.0
TARGET_RATIO = 2.0
TARGET_TEXT = "p50<100ms and overhead<2x bare Celery"
JOB_KIND = "core.ping"
WORKER_PREFIX = f"bench-job-dispatch-{os.getpid()}"


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


def cpu_consumers(app) -> dict[str, list[str]]:
    """Worker node -> its queues, for every worker that answers and consumes `cpu`."""
    replies = app.control.inspect(timeout=1.5).active_queues() or {}
    return {
        node: [q.get("name") for q in queues]
        for node, queues in replies.items()
        if any(q.get("name") == "cpu" for q in queues)
    }


def queue_depth(app, queue: str = "cpu") -> int:
    """Messages waiting in the broker for `queue` (0 when the queue does not exist yet)."""
    with app.connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
        except Exception:  # kombu raises ChannelError for a queue that does not exist
            return 0


def drain_queue(app, service: Service, timeout: float = 180.0) -> None:
    """Lets the worker consume messages left in the cpu queue by earlier runs, so they do not
    land in the measurements."""
    if not queue_depth(app):
        return
    deadline = time.monotonic() + timeout
    while queue_depth(app):
        if not service.alive():
            raise BenchError(f"the worker exited (code {service.proc.returncode}):\n{tail(service.log_path)}")
        if time.monotonic() > deadline:
            raise BenchError(f"the cpu queue still holds {queue_depth(app)} messages after {timeout:.0f}s")
        time.sleep(0.2)
    time.sleep(1.0)  # the last ones are running


def wait_worker(service: Service, app, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise BenchError(f"the worker exited (code {service.proc.returncode}):\n{tail(service.log_path)}")
        for reply in app.control.ping(timeout=0.5) or []:
            for node in reply:
                if node.startswith(WORKER_PREFIX + "@"):
                    return node
    raise BenchError(f"the worker did not answer a ping in {timeout:.0f}s:\n{tail(service.log_path)}")


# --- the two paths ----------------------------------------------------------------------------------


@dataclass
class LodeRound:
    latencies_ms: list[float]
    throughput: float
    post_ms: list[float]
    commit_to_sent_ms: list[float]  # created_at -> dispatched_at (row built -> committed, send begins)
    event_latencies_ms: list[float]  # the "queued" event's created_at (the last write before the commit) -> started_at
    run_ms: list[float]  # started_at -> finished_at, in the worker
    submit_rate: float
    send_offsets: list[float]  # when each job's message was sent (dispatched_at), seconds after the first


@dataclass
class CeleryRound:
    latencies_ms: list[float]
    throughput: float
    run_ms: list[float]


@dataclass
class Results:
    lode: list[LodeRound] = field(default_factory=list)
    paced: list[CeleryRound] = field(default_factory=list)
    burst: list[CeleryRound] = field(default_factory=list)


class LodeClient:
    def __init__(self, base_url: str):
        import requests

        self.base_url = base_url
        self.session = requests.Session()
        self.tenant_id: str | None = None

    def signup(self) -> None:
        token = uuid.uuid4().hex[:12]
        email = f"bench-job-dispatch-{token}@example.com"
        password = f"Bench-{uuid.uuid4().hex}"
        organization = f"Bench job_dispatch {token}"
        response = self.session.post(
            f"{self.base_url}/api/v1/auth/signup",
            json={"email": email, "password": password, "organization_name": organization},
            timeout=30,
        )
        if response.status_code == 429:
            # Sign-up is throttled per client address (20/hour); the benchmark's user then comes
            # from the same service the endpoint calls.
            from tenants.services import user_signup

            log("  (sign-up throttled by the API; creating the benchmark user with tenants.services.user_signup)")
            result = user_signup(email=email, password=password, organization_name=organization)
            self.tenant_id = str(result.organization.id)
        elif response.status_code != 201:
            raise BenchError(f"sign-up failed: HTTP {response.status_code}: {response.text[:500]}")
        else:
            self.tenant_id = str(response.json()["organization"]["id"])
        self._sign_in(email, password)
        me = self.session.get(f"{self.base_url}/api/v1/auth/me", timeout=30)
        if me.status_code != 200:
            raise BenchError(f"GET /api/v1/auth/me failed: HTTP {me.status_code}: {me.text[:500]}")

    def _sign_in(self, email: str, password: str) -> None:
        """Signs in through the dashboard's login form: the API then sees a session (with CSRF)."""
        self.session.get(f"{self.base_url}/login/", timeout=30)
        response = self.session.post(
            f"{self.base_url}/login/",
            data={"username": email, "password": password, "csrfmiddlewaretoken": self.session.cookies["csrftoken"]},
            allow_redirects=False,
            timeout=30,
        )
        if response.status_code != 302:
            raise BenchError(f"sign-in failed: HTTP {response.status_code}")
        self.session.headers["X-CSRFToken"] = self.session.cookies["csrftoken"]

    def submit(self) -> str:
        response = self.session.post(f"{self.base_url}/api/v1/jobs", json={"kind": JOB_KIND, "params": {}}, timeout=60)
        if response.status_code != 202:
            raise BenchError(f"POST /api/v1/jobs: HTTP {response.status_code}: {response.text[:500]}")
        return response.json()["id"]


def wait_jobs(job_ids: list[str], timeout: float) -> list[dict]:
    from lode.core.models import Job, JobState
    from tenants.db_context import dangerously_all_tenants

    terminal = [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]
    # The system role (BYPASSRLS) reads the rows whatever tenant they belong to.
    jobs = dangerously_all_tenants(Job).filter(id__in=job_ids)
    deadline = time.monotonic() + timeout
    while True:
        done = jobs.filter(state__in=terminal).count()
        if done == len(job_ids):
            break
        if time.monotonic() > deadline:
            states = sorted(jobs.values_list("state", flat=True))
            counts = {state: states.count(state) for state in set(states)}
            raise BenchError(f"only {done} of {len(job_ids)} jobs finished within {timeout:.0f}s: {counts}")
        time.sleep(0.05)
    rows = list(jobs.values("id", "state", "error", "created_at", "dispatched_at", "started_at", "finished_at"))
    failed = [row for row in rows if row["state"] != JobState.SUCCEEDED]
    if failed:
        raise BenchError(f"{len(failed)} jobs did not succeed, e.g. {failed[0]['state']}: {failed[0]['error'][:300]}")
    return rows


def lode_round(client: LodeClient, n: int) -> LodeRound:
    """Submits n jobs through the API, one after the other, and waits for them all to succeed."""
    job_ids: list[str] = []
    post_ms: list[float] = []
    first = time.time()
    for _ in range(n):
        sent = time.time()
        job_ids.append(client.submit())
        post_ms.append((time.time() - sent) * 1000)
    submitted = time.time()
    rows = wait_jobs(job_ids, timeout=120 + n * 0.5)
    from lode.core.models import JobEvent
    from tenants.db_context import dangerously_all_tenants

    queued_at = dict(
        dangerously_all_tenants(JobEvent)
        .filter(job_id__in=job_ids, kind=JobEvent.Kind.STATE, message="queued")
        .values_list("job_id", "created_at")
    )
    latencies = [(r["started_at"] - r["dispatched_at"]).total_seconds() * 1000 for r in rows]
    last_finished = max(r["finished_at"] for r in rows).timestamp()
    sends = sorted(r["dispatched_at"].timestamp() for r in rows)
    return LodeRound(
        send_offsets=[t - sends[0] for t in sends],
        latencies_ms=latencies,
        throughput=n / (last_finished - first),
        post_ms=post_ms,
        commit_to_sent_ms=[(r["dispatched_at"] - r["created_at"]).total_seconds() * 1000 for r in rows if r["dispatched_at"]],
        run_ms=[(r["finished_at"] - r["started_at"]).total_seconds() * 1000 for r in rows],
        event_latencies_ms=[
            (r["started_at"] - queued_at[r["id"]]).total_seconds() * 1000 for r in rows if r["id"] in queued_at
        ],
        submit_rate=n / (submitted - first),
    )


def celery_results(run_id: str, n: int, first: float) -> CeleryRound:
    from bench import celery_baseline

    deadline = time.monotonic() + 120 + n * 0.5
    while celery_baseline.results_count(run_id) < n:
        if time.monotonic() > deadline:
            raise BenchError(f"only {celery_baseline.results_count(run_id)} of {n} baseline tasks ran in time")
        time.sleep(0.02)
    records = celery_baseline.results_read(run_id)
    celery_baseline.results_delete(run_id)
    latencies = [(started - sent) * 1000 for sent, started, _ in records.values()]
    last_finished = max(finished for _, _, finished in records.values())
    return CeleryRound(
        latencies_ms=latencies,
        throughput=n / (last_finished - first),
        run_ms=[(finished - started) * 1000 for _, started, finished in records.values()],
    )


def replay_round(offsets: list[float]) -> CeleryRound:
    """Bare tasks sent on the schedule the Lode round's messages were sent on (its jobs'
    dispatched_at, relative to the first), after that round has finished: the same arrival rate,
    with nothing else running."""
    from bench import celery_baseline

    run_id = uuid.uuid4().hex
    first = time.time()
    for index, offset in enumerate(offsets):
        delay = first + offset - time.time()
        if delay > 0:
            time.sleep(delay)
        celery_baseline.baseline_ping.delay(run_id, index, time.time())
    return celery_results(run_id, len(offsets), first)


def burst_round(n: int) -> CeleryRound:
    """n bare tasks sent back to back: the queue's capacity."""
    from bench import celery_baseline

    run_id = uuid.uuid4().hex
    first = time.time()
    for index in range(n):
        celery_baseline.baseline_ping.delay(run_id, index, time.time())
    return celery_results(run_id, n, first)


# --- report -------------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def report(results: Results, n: int, rounds: int, worker_node: str) -> None:
    def summary(items, attr="latencies_ms"):
        return (
            med([percentile(getattr(r, attr), 50) for r in items]),
            med([percentile(getattr(r, attr), 95) for r in items]),
            med([r.throughput for r in items]),
        )

    lode_p50, lode_p95, lode_tp = summary(results.lode)
    paced_p50, paced_p95, paced_tp = summary(results.paced)
    burst_p50, burst_p95, burst_tp = summary(results.burst)

    def p50_of(items, attr: str) -> float:
        return med([percentile(getattr(r, attr), 50) for r in items])

    def p95_of(items, attr: str) -> float:
        return med([percentile(getattr(r, attr), 95) for r in items])

    p50_ratio = lode_p50 / paced_p50 if paced_p50 > 0 else float("inf")
    p95_ratio = lode_p95 / paced_p95 if paced_p95 > 0 else float("inf")
    log("")
    log(f"job_dispatch: {n} jobs x {rounds} rounds, one worker {worker_node} (queue cpu); figures are medians of the per-round values")
    log("latency = from the commit to the worker's start. Lode: Job.started_at - Job.dispatched_at from the DB rows (dispatched_at")
    log("  is taken in the on-commit callback just before the message is sent; started_at when the worker claims the job).")
    log("  Celery: the task's start - time.time() taken just before .delay().")
    log("throughput = jobs / (first submission -> last job finished).")
    log("")
    log(f"{'path':<46} {'p50 ms':>8} {'p95 ms':>8} {'jobs/s':>8}")
    log(f"{'lode: POST /api/v1/jobs -> Job -> worker':<46} {fmt(lode_p50):>8} {fmt(lode_p95):>8} {fmt(lode_tp):>8}")
    log(f"{'celery .delay(), same schedule as Lode':<46} {fmt(paced_p50):>8} {fmt(paced_p95):>8} {fmt(paced_tp):>8}")
    log(f"{'celery .delay(), burst (capacity)':<46} {fmt(burst_p50):>8} {fmt(burst_p95):>8} {fmt(burst_tp):>8}")
    log(f"ratio lode/celery same schedule: p50 {p50_ratio:.2f}x  p95 {p95_ratio:.2f}x  throughput {lode_tp / paced_tp:.2f}x")
    log(f"ratio lode/celery burst: throughput {lode_tp / burst_tp:.3f}x")
    log("")
    log("where the Lode path's time goes (p50s):")
    rows = [
        ("client POST /api/v1/jobs round trip", p50_of(results.lode, "post_ms"),
         f"one client submits {fmt(med([r.submit_rate for r in results.lode]))} jobs/s"),
        ("created_at -> dispatched_at (insert, commit)", p50_of(results.lode, "commit_to_sent_ms"),
         "row built -> transaction committed"),
        ("'queued' event row -> started_at", p50_of(results.lode, "event_latencies_ms"),
         f"p95 {fmt(p95_of(results.lode, 'event_latencies_ms'))} ms; the event is the last write before the commit"),
        ("started_at -> finished_at (in the worker)", p50_of(results.lode, "run_ms"),
         f"bare task: {p50_of(results.paced, 'run_ms'):.2f} ms"),
    ]
    for label, value, note in rows:
        log(f"  {label:<44} {fmt(value):>7} ms   {note}")
    for index, (lode, paced, burst) in enumerate(zip(results.lode, results.paced, results.burst), start=1):
        log(f"  round {index}: lode p50 {fmt(percentile(lode.latencies_ms, 50))} p95 {fmt(percentile(lode.latencies_ms, 95))}"
            f" {fmt(lode.throughput)}/s | same-schedule p50 {fmt(percentile(paced.latencies_ms, 50))}"
            f" p95 {fmt(percentile(paced.latencies_ms, 95))} {fmt(paced.throughput)}/s"
            f" | burst p50 {fmt(percentile(burst.latencies_ms, 50))} p95 {fmt(percentile(burst.latencies_ms, 95))}"
            f" {fmt(burst.throughput)}/s")
    met = lode_p50 < TARGET_P50_MS and p50_ratio < TARGET_RATIO
    log(f'BENCH job_dispatch p50_ms={lode_p50:.1f} baseline={paced_p50:.1f} ratio={p50_ratio:.2f} '
        f'target="{TARGET_TEXT}" met={"yes" if met else "no"}')


# --- main -----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    n, rounds = (args.jobs or (50 if args.quick else 200)), args.rounds
    migrate()

    import django

    django.setup()
    from lode.celery import app

    import bench.celery_baseline  # noqa: F401  (registers the baseline task on the app)

    others = cpu_consumers(app)
    if others:
        log(f"WARNING: other workers consume the cpu queue and will take part of the work: {sorted(others)}")

    depth = queue_depth(app)
    if depth:
        log(f"{depth} messages are waiting in the cpu queue; the benchmark's worker drains them before measuring")
    log_dir = Path(tempfile.mkdtemp(prefix="lode-bench-job-dispatch-"))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env["LODE_WEB_PORT"] = str(port)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(log_dir / "prometheus")  # web.sh empties it: keep it ours
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "platform"), env.get("PYTHONPATH", "")) if p)

    services: list[Service] = []
    try:
        log(f"starting the web server on {base_url} and one cpu worker (logs in {log_dir}) ...")
        web = start_service("web", ["bash", "infra/web.sh"], env, log_dir)
        services.append(web)
        worker = start_service(
            "worker",
            ["bash", "infra/worker.sh", "cpu", "--include", "bench.celery_baseline", "--loglevel", "WARNING",
             "-n", f"{WORKER_PREFIX}@%h"],
            env, log_dir,
        )
        services.append(worker)
        wait_web(web, base_url)
        node = wait_worker(worker, app)
        others = {k: v for k, v in cpu_consumers(app).items() if k != node}
        if others:
            log(f"WARNING: besides {node}, these workers consume the cpu queue: {sorted(others)}")

        drain_queue(app, worker)

        client = LodeClient(base_url)
        client.signup()

        log("warming up ...")
        replay_round(lode_round(client, 6).send_offsets)
        burst_round(10)

        results = Results()
        for index in range(1, rounds + 1):
            log(f"round {index}/{rounds}: {n} Lode jobs through the API, then {n} bare Celery tasks on the same"
                f" schedule, then {n} in a burst ...")
            lode = lode_round(client, n)
            results.lode.append(lode)
            results.paced.append(replay_round(lode.send_offsets))
            results.burst.append(burst_round(n))
            for service in services:
                if not service.alive():
                    raise BenchError(f"the {service.name} process exited during the run:\n{tail(service.log_path)}")
        report(results, n, rounds, node)
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for service in reversed(services):
            service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 jobs per round instead of 200")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per round (overrides --quick)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians over them (default 3)")
    args = parser.parse_args()

    return run_cli("job_dispatch", run, args)


if __name__ == "__main__":
    sys.exit(main())
