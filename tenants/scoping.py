"""The one tenant-scoping mechanism for API views.

A view lists and looks up rows only through `get_queryset()`, which this mixin owns: it filters by
the request's tenant and fails closed (403) when the request has none. Subclasses supply the
unscoped base through `safely_get_queryset()`; overriding `get_queryset` is refused at class
creation, so scoping cannot be skipped by accident. A foreign tenant's object is therefore simply
not found (404), the same answer as a missing one."""
from __future__ import annotations

from django.db.models import QuerySet

from lode.core.errors import PermissionDenied

from .context import current_access
from .models import Organization


class TenantScopedMixin:
    tenant_field = "tenant"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} overrides get_queryset(); implement safely_get_queryset() so tenant "
                "scoping stays applied"
            )

    @property
    def tenant(self) -> Organization:
        access = current_access(self.request)
        tenant = access.tenant if access is not None else None
        if tenant is None:
            raise PermissionDenied("This account does not belong to an organization.")
        return tenant

    def safely_get_queryset(self) -> QuerySet:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet:
        return self.safely_get_queryset().filter(**{f"{self.tenant_field}_id": self.tenant.id})
