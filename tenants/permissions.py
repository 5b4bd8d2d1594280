"""Roles, areas and what each role may do; the DRF permission every endpoint declares.

An endpoint names its area (`required_area = "training"`); reads need `<area>:read`, writes
`<area>:write`, and a write that needs more names it too (`write_also_requires = ("datasets:write",)`);
a view whose reads or writes another area's right may stand in for names that area
(`also_accepted_areas = ("training",)`).
A member's rights come from their role; an API key's from its scopes, which can never exceed the
rights of the member who created it. A denial is a 403 naming the permission."""
from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from lode.core.errors import PermissionDenied

from .models import Role

AREAS = ("platform", "datasets", "labeling", "training", "generation", "safety", "billing", "organization", "audit")
# Rights narrower than an area's write, for the writes not every writer of the area may make:
# safety:policy changes the safety policy (reviewers write safety, deciding items, but do not set
# the rules they are held to).
EXTRA_SCOPES = ("safety:policy",)
ALL_SCOPES = tuple(f"{area}:{mode}" for area in AREAS for mode in ("read", "write")) + EXTRA_SCOPES


def _rw(*areas: str) -> set[str]:
    return {f"{area}:{mode}" for area in areas for mode in ("read", "write")}


# "platform" covers the shared mechanisms (jobs, artifacts); "organization" members, invitations
# and API keys; "audit" reading the audit log (it is never written through the API).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.OWNER: frozenset(ALL_SCOPES),
    Role.ADMIN: frozenset(_rw("platform", "datasets", "labeling", "training", "generation", "safety", "organization")
                          | {"billing:read", "audit:read", "safety:policy"}),
    Role.ENGINEER: frozenset(_rw("platform", "datasets", "labeling", "training", "generation")
                             | {"safety:read", "organization:read"}),
    Role.ANNOTATOR: frozenset({"labeling:read", "labeling:write", "organization:read"}),
    Role.REVIEWER: frozenset(_rw("safety") | {"organization:read"}),
    Role.BILLING: frozenset(_rw("billing") | {"organization:read"}),
}


def permission_for(*, area: str, method: str) -> str:
    return f"{area}:{'read' if method in SAFE_METHODS else 'write'}"


def permissions_for(*, view, method: str) -> tuple[str, ...]:
    """Everything a call needs: the area's read or write, then what the view's writes also need."""
    needed = (permission_for(area=view.required_area, method=method),)
    if method not in SAFE_METHODS:
        needed += tuple(getattr(view, "write_also_requires", ()))
    return needed


class AreaPermission(BasePermission):
    """Checks the view's `required_area` against the member's role or the API key's scopes."""

    def has_permission(self, request, view) -> bool:
        area = getattr(view, "required_area", None)
        if area is None:
            raise PermissionDenied("This endpoint declares no permission; access is refused.")
        access = getattr(request, "tenant_access", None)
        if access is None:
            return False  # not authenticated: DRF answers 401
        needs = permissions_for(view=view, method=request.method)
        # A view may let another area's right stand in for its own (`also_accepted_areas`): the
        # models a key can call are listed for a key that generates and for one that fine-tunes.
        also = [permission_for(area=area, method=request.method) for area in getattr(view, "also_accepted_areas", ())]
        if also and needs[0] not in access.permissions and any(p in access.permissions for p in also):
            needs = needs[1:]
        for needed in needs:
            if needed not in access.permissions:
                alternatives = f" (or {' or '.join(also)})" if also and needed == needs[0] else ""
                raise PermissionDenied(f"Missing permission {needed}{alternatives}.",
                                       details={"required": needed, **({"also_accepted": also} if alternatives else {})})
        return True
