"""Metering benchmark: usage events recorded through the one metering call
(lode.billing.services.usage_record) by 8 concurrent producers, 10% of them re-sends, then the
monthly close over them; against a baseline in the same run that inserts events one by one with
the Django ORM and catches IntegrityError for the re-sends.

    make up                                      # PostgreSQL, Redis, S3 (bash infra/services.sh up)
    .venv/bin/python bench/metering.py           # 1,000,000 events in batches of 5,000, 1 round; baseline 40,000
    .venv/bin/python bench/metering.py --quick   # 100,000 events in batches of 2,000, 3 rounds; baseline 8,000

Each round uses fresh organizations (tenants.services.user_signup): one for Lode, one for the
baseline. Their `created_at` is moved to the first of last month before billing first sees them,
so that their default subscription covers last month: the events are dated last month and the
close is that month's (it has ended; usage_record accepts the past, refuses the future).

- The stream: N events, N/10 of them re-sends of an earlier event (same key, quantity and time),
  built from a fixed seed and cut into batches dealt round-robin to 8 producer processes (forked
  after django.setup(), each with its own database connection). Half of the re-sends
  (--in-flight-share) repeat an event of the same or the previous round of batches, which may
  still be in flight in another producer (a redelivery after a short timeout); the others an
  older, committed one. Producers build their UsageInput objects before a start barrier: what is
  timed is the metering call alone.
- Lode: each producer calls usage_record(tenant_id=..., events=batch) for each of its batches,
  retrying a batch whole (it is idempotent; exponential back-off with full jitter, up to 5 s) when
  PostgreSQL aborts it with a deadlock or serialization failure; retries are counted and reported.
  events/s = events sent / (barrier released -> last producer done). A phase still running after
  --time-limit seconds (default events / 5,000, at least 60: four times slower than the target)
  is stopped: its events/s counts the batches that finished, and there is no close and no check.
- Baseline (the BENCH line's): the same 8 producers send a smaller stream built the same way
  (40,000 events; --quick 8,000), one UsageEvent.objects.create() per event, each in its own
  tenant_atomic() transaction (what a naive view or task does), counting IntegrityError as a
  duplicate. It is smaller for time's sake; its rate is events/s on that stream.
- The close: invoice_close(period_start=<first of last month>), timed once per round (a second
  close would return the same invoice).
- Exactness: ledger rows and distinct keys = unique events, the ledger's quantity per meter and
  dimension = the stream's, reported recorded/duplicates = unique events/re-sends, the invoice's
  usage_event_count and selectors.usage_event_count = unique events, selectors.usage_totals and
  each usage line's quantity = the stream's totals (per price: input_tokens:* pool in one line).
  miscounted = the sum of the event-count differences; a quantity difference also fails the run.

The ledger is append-only (a trigger refuses DELETE): each run's organizations and events stay in
the dev database (about 900,000 rows for a full run).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import random
import statistics
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lode.settings.dev")
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

from bench.harness import BenchError, log, migrate, percentile, run_cli  # noqa: E402

TARGET_EVENTS_PER_S = 20_000.0
TARGET_CLOSE_S = 30.0
TARGET_RATIO = 5.0
TARGET_TEXT = "≥20000 events/s, close <30 s, ≥5x baseline, 0 miscounted"
SEED = 20261123
DUPLICATE_SHARE = 10  # one event in DUPLICATE_SHARE is a re-send
# (meter, dimension): a mix of per-class prices (gpu_seconds) and pooled ones (tokens, images).
KINDS = (
    ("gpu_seconds", "h100"),
    ("gpu_seconds", "a100"),
    ("input_tokens", "small"),
    ("input_tokens", "medium"),
    ("output_tokens", "small"),
    ("images", "small"),
)

# Set in the parent before the producers fork; they read it (copy-on-write), nothing is pickled.
_STREAM: list[int] = []


# --- the event stream --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())


def last_month(now: datetime) -> Period:
    from lode.billing.selectors import period_bounds

    this_start, _ = period_bounds(now)
    start, end = period_bounds(this_start - timedelta(seconds=1))
    return Period(start, end)


def event_fields(u: int, period: Period) -> tuple[str, str, Decimal, str, datetime, str, str]:
    """Everything about unique event u, from u alone: (meter, dimension, quantity, key,
    occurred_at, source_type, source_id). A re-send is the same tuple."""
    meter, dimension = KINDS[u % len(KINDS)]
    if meter == "gpu_seconds":
        quantity = Decimal(f"{1 + (u * 7919) % 600}.{(u * 104729) % 1000:03d}")  # up to 3 decimals
    elif meter == "images":
        quantity = Decimal(1 + u % 4)
    else:
        quantity = Decimal(1 + (u * 7919) % 4000)
    occurred_at = period.start + timedelta(seconds=(u * 2654435761) % period.seconds, microseconds=u % 1_000_000)
    source_type = "job" if meter == "gpu_seconds" else "request"
    return meter, dimension, quantity, f"evt-{u:08d}", occurred_at, source_type, f"src-{u % 997}"


def stream_build(n: int, *, batch: int, producers: int, in_flight: float = 0.5, seed: int = SEED) -> tuple[list[int], int]:
    """n events (unique indexes, re-sends repeating an earlier one) and the number of re-sends.
    Batches are dealt round-robin, so a "round" of `producers` batches runs at once. A share
    `in_flight` of the re-sends repeats an event of this round or the one before (a redelivery
    after a short timeout: the original may still be in flight in another producer); the others
    repeat an older event (committed by then; near the stream's start, where there is none, one
    sent earlier by the same producer, or else one of its own batch)."""
    rng = random.Random(seed)
    duplicates = n // DUPLICATE_SHARE
    first_possible = min(n - duplicates, max(1, batch // 2))
    positions = set(rng.sample(range(first_possible, n), duplicates)) if duplicates else set()
    stream: list[int] = []
    emitted = 0  # unique events so far
    emitted_at: list[int] = []  # unique events emitted before each batch
    for position in range(n):
        if position % batch == 0:
            emitted_at.append(emitted)
        this_batch = position // batch
        this_round = this_batch // producers
        near_from = emitted_at[(this_round - 1) * producers] if this_round else 0  # this round and the one before
        if position not in positions:
            stream.append(emitted)
            emitted += 1
        elif rng.random() < in_flight:
            stream.append(rng.randrange(near_from, emitted))
        elif near_from:
            stream.append(rng.randrange(near_from))
        elif this_batch >= producers:
            # The same producer's previous batch (it sends its batches one after the other).
            stream.append(rng.randrange(emitted_at[this_batch - producers], emitted_at[this_batch - producers + 1]))
        else:
            stream.append(rng.randrange(emitted_at[this_batch], emitted) if emitted > emitted_at[this_batch] else emitted - 1)
    return stream, duplicates


def batches_of(stream_len: int, *, batch: int, producers: int, index: int) -> list[tuple[int, int]]:
    """The (start, stop) slices of the stream producer `index` sends: every producers-th batch."""
    return [(start, min(start + batch, stream_len)) for start in range(index * batch, stream_len, batch * producers)]


@dataclass
class Expected:
    unique: int
    duplicates: int
    totals: dict[tuple[str, str], Decimal]


def expected_of(stream: list[int], duplicates: int, period: Period) -> Expected:
    unique = len(stream) - duplicates
    totals: dict[tuple[str, str], Decimal] = {}
    for u in range(unique):
        meter, dimension, quantity, *_ = event_fields(u, period)
        totals[(meter, dimension)] = totals.get((meter, dimension), Decimal(0)) + quantity
    return Expected(unique=unique, duplicates=duplicates, totals=totals)


# --- producers ---------------------------------------------------------------------------------------


@dataclass
class ProducerResult:
    index: int
    events: int = 0
    recorded: int = 0
    duplicates: int = 0
    started: float = 0.0
    finished: float = 0.0
    call_ms: list[float] = field(default_factory=list)
    retries: int = 0
    retry_reasons: list[str] = field(default_factory=list)
    error: str = ""


RETRY_REASONS = ("deadlock detected", "serialization failure")


def _retryable(exc: BaseException) -> str:
    """'deadlock' / 'serialization' for the PostgreSQL errors a client should retry a batch on."""
    cause = exc.__cause__ or exc
    code = getattr(cause, "pgcode", None)
    return dict(zip(("40P01", "40001"), RETRY_REASONS)).get(code, "")


def producer_main(mode: str, index: int, tenant_id: str, period: Period, slices: list[tuple[int, int]],
                  barrier, results, shared) -> None:
    """One producer process (forked): builds its batches, waits at the barrier, sends them.
    `shared` holds what the parent reads while the phase runs: (start time, events done, batches
    retried per RETRY_REASONS)."""
    started_at, done, retried = shared
    result = ProducerResult(index=index)
    try:
        from django.db import IntegrityError, OperationalError, connection

        from lode.billing.models import UsageEvent
        from lode.billing.services import UsageInput, usage_record
        from tenants.db_context import tenant_atomic

        if mode == "lode":
            batches = [
                [UsageInput(meter=m, quantity=q, idempotency_key=k, source_type=st, source_id=si, dimension=d, occurred_at=at)
                 for m, d, q, k, at, st, si in (event_fields(u, period) for u in _STREAM[start:stop])]
                for start, stop in slices
            ]
        else:
            batches = [[event_fields(u, period) for u in _STREAM[start:stop]] for start, stop in slices]
        connection.ensure_connection()
        barrier.wait(timeout=600)
        result.started = time.time()
        with started_at.get_lock():
            if not started_at.value:
                started_at.value = result.started
        jitter = random.Random(index)
        for events in batches:
            began = time.perf_counter()
            if mode == "lode":
                attempt = 0
                while True:
                    try:
                        outcome = usage_record(tenant_id=tenant_id, events=events)
                        break
                    except OperationalError as exc:
                        reason = _retryable(exc)
                        if not reason:
                            raise
                        # The batch is idempotent: a client retries it whole, after an exponential
                        # back-off with full jitter (0.2 s, 0.4 s, ... up to 5 s).
                        attempt += 1
                        result.retries += 1
                        result.retry_reasons.append(reason)
                        with retried.get_lock():
                            retried[RETRY_REASONS.index(reason)] += 1
                        time.sleep(jitter.uniform(0, min(5.0, 0.1 * 2 ** attempt)))
                result.recorded += outcome.recorded
                result.duplicates += outcome.duplicates
            else:
                for meter, dimension, quantity, key, occurred_at, source_type, source_id in events:
                    try:
                        with tenant_atomic(tenant_id):
                            UsageEvent.objects.create(
                                tenant_id=tenant_id, meter=meter, dimension=dimension, quantity=quantity,
                                occurred_at=occurred_at, accounted_at=occurred_at, source_type=source_type,
                                source_id=source_id, idempotency_key=key,
                            )
                        result.recorded += 1
                    except IntegrityError:
                        result.duplicates += 1
            result.events += len(events)
            result.call_ms.append((time.perf_counter() - began) * 1000)
            with done.get_lock():
                done.value += len(events)
        result.finished = time.time()
    except BaseException:  # reported to the parent, which fails the run
        result.error = traceback.format_exc()
    finally:
        results.put(result)


@dataclass
class Phase:
    events: int
    recorded: int
    duplicates: int
    seconds: float
    call_ms: list[float]
    retries: int
    retry_reasons: dict[str, int]
    timed_out: bool = False  # stopped at the time limit: events = those in the batches that finished
    planned: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def baseline_batch_size(args: argparse.Namespace) -> int:
    """The baseline's stream is dealt in smaller slices, so that all producers get a share of it."""
    return max(1, min(args.batch, args.baseline_events // (args.producers * 4)))


def produce(mode: str, *, tenant_id: str, period: Period, stream: list[int], batch: int, producers: int,
            limit_s: float) -> Phase:
    """Runs the producers over the stream and gathers what they report. Past `limit_s` seconds
    after the start barrier, stops them and reports what finished (timed_out)."""
    global _STREAM
    from django.db import connections

    _STREAM = stream
    ctx = multiprocessing.get_context("fork")
    # Children must not share the parent's database sockets: close them before forking.
    connections.close_all()
    barrier = ctx.Barrier(producers)
    results = ctx.Queue()
    shared = (ctx.Value("d", 0.0), ctx.Value("q", 0), ctx.Array("q", len(RETRY_REASONS)))
    processes = [
        ctx.Process(
            target=producer_main, name=f"metering-{mode}-{index}", daemon=True,
            args=(mode, index, tenant_id, period, batches_of(len(stream), batch=batch, producers=producers, index=index),
                  barrier, results, shared),
        )
        for index in range(producers)
    ]
    for process in processes:
        process.start()
    gathered: list[ProducerResult] = []
    setup_deadline = time.monotonic() + 600
    last_note = time.time()
    try:
        while len(gathered) < producers:
            try:
                gathered.append(results.get(timeout=1))
            except queue.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise BenchError(f"producer {dead[0].name} died (exit {dead[0].exitcode})") from None
                began = shared[0].value
                if not began and time.monotonic() > setup_deadline:
                    raise BenchError("the producers did not get ready in 10 minutes") from None
                now = time.time()
                if began and now - last_note >= 10:
                    last_note = now
                    log(f"  ... {shared[1].value:,} of {len(stream):,} events after {now - began:.0f} s"
                        f" ({sum(shared[2])} batches retried)")
                if began and now - began > limit_s:
                    log(f"  TIME LIMIT: {limit_s:.0f} s passed; stopping the producers")
                    return Phase(
                        events=shared[1].value, recorded=0, duplicates=0, seconds=now - began, call_ms=[],
                        retries=sum(shared[2]),
                        retry_reasons={reason: count for reason, count in zip(RETRY_REASONS, shared[2]) if count},
                        timed_out=True, planned=len(stream),
                    )
                continue
            if gathered[-1].error:
                raise BenchError(f"{mode} producer {gathered[-1].index} failed:\n{gathered[-1].error}")
        for process in processes:
            process.join(timeout=30)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
    reasons: dict[str, int] = {}
    for r in gathered:
        for reason in r.retry_reasons:
            reasons[reason] = reasons.get(reason, 0) + 1
    return Phase(
        events=sum(r.events for r in gathered), recorded=sum(r.recorded for r in gathered),
        duplicates=sum(r.duplicates for r in gathered),
        seconds=max(r.finished for r in gathered) - min(r.started for r in gathered),
        call_ms=[ms for r in gathered for ms in r.call_ms], retries=sum(r.retries for r in gathered),
        retry_reasons=reasons, planned=len(stream),
    )


# --- set-up and checks ------------------------------------------------------------------------------


def organization_create(label: str, period: Period) -> str:
    """A fresh user and organization, founded (for billing's purposes) on the first of last month,
    before billing has seen it: its default subscription then starts with the period."""
    from tenants.models import Organization
    from tenants.services import user_signup

    token = uuid.uuid4().hex[:12]
    result = user_signup(email=f"bench-metering-{label}-{token}@example.com", password=f"Bench-{uuid.uuid4().hex}",
                         organization_name=f"Bench metering {label} {token}")
    Organization.objects.filter(id=result.organization.id).update(created_at=period.start)
    return str(result.organization.id)


@dataclass
class Check:
    miscounted: int
    quantity_mismatches: list[str]
    lines: str


def ledger_check(*, tenant_id: str, period: Period, expected: Expected, phase: Phase, invoice=None) -> Check:
    """Compares the ledger (and the invoice, when given) with what the stream says."""
    from django.db import connection

    from lode.billing import selectors
    from tenants.db_context import tenant_atomic

    with tenant_atomic(tenant_id), connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM billing_usageevent WHERE tenant_id = %s",
                       [tenant_id])
        rows, distinct = cursor.fetchone()
        cursor.execute("SELECT meter, dimension, SUM(quantity) FROM billing_usageevent WHERE tenant_id = %s"
                       " GROUP BY meter, dimension", [tenant_id])
        ledger = {(m, d): total for m, d, total in cursor.fetchall()}
    miscounted = (abs(rows - expected.unique) + abs(distinct - expected.unique)
                  + abs(phase.recorded - expected.unique) + abs(phase.duplicates - expected.duplicates))
    mismatches = [f"ledger {m}:{d} {ledger.get((m, d))} != {total}" for (m, d), total in sorted(expected.totals.items())
                  if ledger.get((m, d)) != total]
    mismatches += [f"ledger {m}:{d} {total} not in the stream" for (m, d), total in ledger.items() if (m, d) not in expected.totals]
    lines = ""
    if invoice is not None:
        in_period = selectors.usage_event_count(tenant_id=tenant_id, start=period.start, end=period.end)
        totals = selectors.usage_totals(tenant_id=tenant_id, start=period.start, end=period.end)
        miscounted += abs(invoice.usage_event_count - expected.unique) + abs(in_period - expected.unique)
        if totals != expected.totals:
            mismatches.append(f"usage_totals of the period {totals} != {expected.totals}")
        with tenant_atomic(tenant_id):
            usage_lines = list(invoice.lines.filter(kind="usage"))
        # A line pools every (meter, dimension) its price covers (input_tokens:* under one price).
        pooled: dict[tuple[str, str], Decimal] = {}
        for line in usage_lines:
            terms = selectors.plan_terms(line.plan_version_id)
            break
        else:
            terms = None
        for (meter, dimension), total in expected.totals.items():
            price = terms.price_for(meter, dimension) if terms else None
            key = (price.meter, price.dimension) if price else (meter, dimension)
            pooled[key] = pooled.get(key, Decimal(0)) + total
        billed = {}
        for line in usage_lines:
            billed[(line.meter, line.dimension)] = billed.get((line.meter, line.dimension), Decimal(0)) + line.quantity
        if billed != pooled:
            mismatches.append(f"invoice lines {billed} != {pooled}")
        lines = ", ".join(f"{m}{':' + d if d else ''} {q.normalize():f}" for (m, d), q in sorted(billed.items()))
    return Check(miscounted=miscounted, quantity_mismatches=mismatches, lines=lines)


# --- one round ----------------------------------------------------------------------------------------


@dataclass
class Round:
    lode: Phase
    baseline: Phase
    close_s: float  # nan when the Lode phase hit its time limit (no close, no checks)
    check: Check | None
    baseline_check: Check | None
    invoice_number: str = ""
    invoice_total_minor: int = 0


def one_round(index: int, args: argparse.Namespace, period: Period, streams: dict[str, list[int]], expected: Expected,
              baseline_expected: Expected) -> Round:
    from lode.billing.services import invoice_close

    lode_tenant = organization_create("lode", period)
    baseline_tenant = organization_create("baseline", period)
    log(f"round {index}: Lode: {args.events:,} events through usage_record, {args.producers} producers x batches of"
        f" {args.batch:,} (time limit {args.limit_s:.0f} s) ...")
    lode = produce("lode", tenant_id=lode_tenant, period=period, stream=streams["lode"], batch=args.batch,
                   producers=args.producers, limit_s=args.limit_s)
    retried = f"; {lode.retries} batches retried ({retry_text(lode.retry_reasons)})" if lode.retries else ""
    close_s, check, invoice = float("nan"), None, None
    if lode.timed_out:
        log(f"  only {lode.events:,} of {lode.planned:,} events in {lode.seconds:.0f} s: {lode.rate:,.0f} events/s{retried};"
            f" no close, no checks (the ledger holds a partial stream)")
    else:
        log(f"  {lode.rate:,.0f} events/s ({lode.seconds:.2f} s){retried}; closing {period.start:%Y-%m} ...")
        began = time.perf_counter()
        invoice = invoice_close(tenant_id=lode_tenant, period_start=period.start)
        close_s = time.perf_counter() - began
        check = ledger_check(tenant_id=lode_tenant, period=period, expected=expected, phase=lode, invoice=invoice)
        log(f"  close {close_s:.2f} s (invoice {invoice.number}, total {invoice.total_minor} minor units)"
            f"; miscounted={check.miscounted}")
    log(f"round {index}: baseline: {args.baseline_events:,} events, one ORM insert per event in its own transaction,"
        f" {args.producers} producers ...")
    baseline_limit = max(120.0, args.baseline_events / 100)
    baseline = produce("baseline", tenant_id=baseline_tenant, period=period, stream=streams["baseline"],
                       batch=baseline_batch_size(args), producers=args.producers, limit_s=baseline_limit)
    baseline_check = None
    if baseline.timed_out:
        log(f"  time limit: {baseline.events:,} events in {baseline.seconds:.0f} s: {baseline.rate:,.0f} events/s (no checks)")
    else:
        baseline_check = ledger_check(tenant_id=baseline_tenant, period=period, expected=baseline_expected, phase=baseline)
        log(f"  {baseline.rate:,.0f} events/s ({baseline.seconds:.2f} s); miscounted={baseline_check.miscounted}")
    return Round(lode=lode, baseline=baseline, close_s=close_s, check=check, baseline_check=baseline_check,
                 invoice_number=invoice.number if invoice else "", invoice_total_minor=invoice.total_minor if invoice else 0)


def retry_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items()))


# --- report ----------------------------------------------------------------------------------------------


def report(rounds: list[Round], args: argparse.Namespace, expected: Expected, period: Period) -> None:
    med = statistics.median
    finished = [r for r in rounds if not r.lode.timed_out]
    rate = med([r.lode.rate for r in rounds])
    baseline = med([r.baseline.rate for r in rounds])
    ratio = rate / baseline if baseline > 0 else float("inf")
    close_s = med([r.close_s for r in finished]) if finished else float("nan")
    checks = [r.check for r in finished] + [r.baseline_check for r in rounds if r.baseline_check]
    miscounted = max((r.check.miscounted for r in finished), default=None)
    baseline_miscounted = max((r.baseline_check.miscounted for r in rounds if r.baseline_check), default=None)
    mismatches = [m for c in checks for m in c.quantity_mismatches]
    retries = sum(r.lode.retries for r in rounds)
    reasons: dict[str, int] = {}
    for r in rounds:
        for reason, count in r.lode.retry_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    n_rounds = len(rounds)
    log("")
    log(f"metering: {args.events:,} events ({expected.unique:,} unique + {expected.duplicates:,} re-sends, {args.in_flight_share:.0%}"
        f" of them of events possibly in flight) dated"
        f" {period.start:%Y-%m}, {args.producers} producer processes, batches of {args.batch:,};"
        f" {n_rounds} round{'s' if n_rounds > 1 else ''}, figures are medians of the per-round values"
        + ("" if n_rounds > 1 else " (one round)"))
    log(f"events/s = events sent / (start barrier -> last producer done); this machine has {os.cpu_count()} CPUs,"
        f" shared by the producers and PostgreSQL.")
    if len(finished) < n_rounds:
        log(f"WARNING: {n_rounds - len(finished)} Lode round(s) hit the time limit ({args.limit_s:.0f} s): their events/s"
            f" counts the batches that finished; they have no close and no exactness check.")
    log("")
    log(f"{'path':<52} {'events/s':>10} {'call p50 ms':>12} {'call p95 ms':>12}")
    lode_calls = [ms for r in rounds for ms in r.lode.call_ms]
    base_calls = [ms for r in rounds for ms in r.baseline.call_ms]
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q):.1f}" if values else "n/a"

    log(f"{'lode: usage_record(), one call per batch':<52} {rate:>10,.0f} {ms(lode_calls, 50):>12} {ms(lode_calls, 95):>12}")
    log(f"{'baseline: ORM create() per event, own transaction':<52} {baseline:>10,.0f} {ms(base_calls, 50):>12}"
        f" {ms(base_calls, 95):>12}")
    log(f"  (the baseline sends a stream of {args.baseline_events:,} events built the same way, 10% re-sends, for time's"
        f" sake; its 'call' is one producer's slice of {baseline_batch_size(args):,} events)")
    log(f"ratio lode/baseline: {ratio:.1f}x")
    log(f"duplicates dropped: {', '.join(f'{r.lode.duplicates:,}' for r in finished) or 'n/a'} of"
        f" {expected.duplicates:,} sent per round (baseline: {', '.join(f'{r.baseline.duplicates:,}' for r in rounds)}"
        f" IntegrityErrors of {rounds[0].baseline.planned // DUPLICATE_SHARE:,} re-sends)")
    if finished:
        log(f"monthly close ({period.start:%Y-%m}, {expected.unique:,} events): {close_s:.2f} s"
            f" (rounds: {', '.join(f'{r.close_s:.2f}' for r in finished)}); invoice lines: {finished[-1].check.lines}")
    else:
        log("monthly close: not run (no Lode round finished)")
    log(f"batches retried by the producers: {retries}" + (f" ({retry_text(reasons)})" if reasons else ""))
    if reasons.get("deadlock detected"):
        log("  usage_record's INSERT takes the rows' unique-key locks in the batch's order: batches that share keys"
            " (re-sends in flight) wait on each other in a cycle; PostgreSQL aborts one after deadlock_timeout.")
    for i, r in enumerate(rounds, start=1):
        lode_text = (f"lode {r.lode.rate:,.0f}/s in {r.lode.seconds:.2f} s, recorded {r.lode.recorded:,} duplicates"
                     f" {r.lode.duplicates:,}, close {r.close_s:.2f} s, invoice {r.invoice_number}"
                     f" ({r.invoice_total_minor} minor)") if not r.lode.timed_out else (
                     f"lode TIME LIMIT {r.lode.events:,}/{r.lode.planned:,} events in {r.lode.seconds:.0f} s")
        log(f"  round {i}: {lode_text}, {r.lode.retries} retries | baseline {r.baseline.rate:,.0f}/s in {r.baseline.seconds:.2f} s")
    for mismatch in mismatches[:10]:
        log(f"  QUANTITY MISMATCH: {mismatch}")
    shown = "n/a" if miscounted is None else str(miscounted)
    quantities = "differ" if mismatches else ("match" if finished else "not checked")
    log(f"miscounted={shown} (ledger rows, distinct keys, reported recorded and duplicates, invoice event count"
        f" against the stream; quantities {quantities}; baseline miscounted="
        f"{'n/a' if baseline_miscounted is None else baseline_miscounted})")
    met = (len(finished) == n_rounds and rate >= TARGET_EVENTS_PER_S and close_s < TARGET_CLOSE_S
           and ratio >= TARGET_RATIO and miscounted == 0 and not mismatches)
    log(f'BENCH metering events_per_s={rate:.0f} baseline={baseline:.0f} ratio={ratio:.2f} '
        f'target="{TARGET_TEXT}" met={"yes" if met else "no"}')


# --- main ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    args.events = args.events or (100_000 if args.quick else 1_000_000)
    args.baseline_events = args.baseline_events or (8_000 if args.quick else 40_000)
    args.rounds = args.rounds or (3 if args.quick else 1)
    # --quick: smaller batches, so that its 100,000 events still make several rounds of batches
    # (re-sends of committed events from other producers need rounds behind them).
    args.batch = args.batch or (2_000 if args.quick else 5_000)
    # The time the events take at a quarter of the target rate: a run that deadlocks stops and says so.
    args.limit_s = args.time_limit or max(60.0, args.events / 5_000)
    migrate()

    import django

    django.setup()
    from django.utils import timezone

    period = last_month(timezone.now())
    log(f"building the streams ({args.events:,} events, seed {SEED}; baseline {args.baseline_events:,}) ...")
    stream, duplicates = stream_build(args.events, batch=args.batch, producers=args.producers, in_flight=args.in_flight_share)
    expected = expected_of(stream, duplicates, period)
    baseline_batch = baseline_batch_size(args)
    baseline_stream, baseline_duplicates = stream_build(args.baseline_events, batch=baseline_batch, producers=args.producers,
                                                        in_flight=args.in_flight_share, seed=SEED + 1)
    baseline_expected = expected_of(baseline_stream, baseline_duplicates, period)
    log(f"  {expected.unique:,} unique + {expected.duplicates:,} re-sends; baseline {baseline_expected.unique:,}"
        f" + {baseline_expected.duplicates:,}")
    streams = {"lode": stream, "baseline": baseline_stream}
    rounds: list[Round] = []
    for index in range(1, args.rounds + 1):
        rounds.append(one_round(index, args, period, streams, expected, baseline_expected))
        if rounds[-1].lode.timed_out or rounds[-1].lode.rate < TARGET_EVENTS_PER_S / 4:
            # Far from the target: more rounds would not change the verdict, only take minutes.
            if index < args.rounds:
                log(f"  (under a quarter of the target: the remaining {args.rounds - index} round(s) are skipped)")
            break
    report(rounds, args, expected, period)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 events x 3 rounds in batches of 2,000, baseline 8,000")
    parser.add_argument("--events", type=int, default=None, help="events per round (default 1,000,000; --quick 100,000)")
    parser.add_argument("--baseline-events", type=int, default=None, help="baseline events (default 40,000; --quick 8,000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 1; --quick 3); figures are medians")
    parser.add_argument("--producers", type=int, default=8, help="producer processes (default 8)")
    parser.add_argument("--in-flight-share", type=float, default=0.5,
                        help="share of the re-sends that repeat an event of the last two rounds of batches, which may"
                             " still be in flight in another producer (default 0.5; the others an older, committed one)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds a Lode phase may run before it is stopped (default: events / 5,000, at least 60)")
    parser.add_argument("--batch", type=int, default=None, help="events per usage_record call (default 5,000; --quick 2,000)")
    args = parser.parse_args()
    if args.producers < 1 or (args.batch is not None and args.batch < 1) or (args.events is not None and args.events < 1):
        parser.error("--producers, --batch and --events must be positive")
    if not 0 <= args.in_flight_share <= 1:
        parser.error("--in-flight-share must be between 0 and 1")
    return run_cli("metering", run, args)


if __name__ == "__main__":
    sys.exit(main())
