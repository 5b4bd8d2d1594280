"""Where the job mechanism meets billing, without core importing it.

Billing registers one JobMetering at start-up (lode.billing.apps). The job mechanism then
- admits a job before it is written: its kind's usage estimate must fit the tenant's quotas
  (the metering implementation raises a 402 error when it does not);
- meters a metered kind's compute time at every checkpoint and at the end, in the same
  transaction as the checkpoint, under the key job:<id>:compute:<n>, so a resumed job that re-sends
  its last report is not billed twice and a crashed one has billed what it checkpointed;
- asks after each report whether a hard limit is now reached, and stops the job if so."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID


class JobMetering(Protocol):
    def admit(self, *, tenant_id: UUID | str, estimate: list[tuple[str, str, Decimal]]) -> dict[str, Any]:
        """Raises when the estimated usage does not fit; returns the estimate's figures."""

    def record_compute(
        self, *, tenant_id: UUID | str, job_id: UUID | str, seq: int, seconds: Decimal, queue: str
    ) -> bool:
        """Records one compute report; True when it was new (False: already recorded)."""

    def hard_limit_reached(self, *, tenant_id: UUID | str, queue: str) -> list[dict[str, Any]]:
        """The hard limits the tenant's usage has reached that concern work on this queue."""


_metering: JobMetering | None = None


def job_metering_set(metering: JobMetering | None) -> None:
    global _metering
    _metering = metering


def job_metering_get() -> JobMetering | None:
    return _metering
