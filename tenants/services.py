"""Writes for users and organizations."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from lode.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed

from .db_context import db_lookup_set, tenant_atomic
from .models import ApiKey, AuditEvent, Invitation, Membership, Organization, Role, User


@dataclass(frozen=True)
class SignupResult:
    user: User
    organization: Organization


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "org"
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def user_signup(*, email: str, password: str, organization_name: str, full_name: str = "") -> SignupResult:
    """Creates a user, their first organization, and makes them its owner."""
    email = User.objects.normalize_email(email).strip().lower()
    if User.objects.filter(email__iexact=email).exists():
        raise Conflict("An account with this email already exists.", details={"field": "email"})
    candidate = User(email=email, full_name=full_name)
    try:
        validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise ValidationFailed(f"password: {exc.messages[0]}", details={"field": "password", "errors": exc.messages}) from None
    if not organization_name.strip():
        raise ValidationFailed("organization_name: may not be blank", details={"field": "organization_name"})
    try:
        user = User.objects.create_user(email, password, full_name=full_name)
    except DjangoValidationError as exc:
        raise ValidationFailed("Invalid user.", details=exc.message_dict) from None
    except IntegrityError:
        raise Conflict("An account with this email already exists.", details={"field": "email"}) from None
    organization = Organization(name=organization_name.strip(), slug=_unique_slug(organization_name))
    organization.full_clean()
    organization.save()
    with tenant_atomic(organization.id, user_id=user.id):
        membership = Membership(user=user, organization=organization, role=Role.OWNER)
        membership.full_clean()
        membership.save()
        audit_record(tenant_id=organization.id, action="organization.created", user=user, target=organization)
    return SignupResult(user=user, organization=organization)


# --- Audit log ----------------------------------------------------------------------------------


def actor_user(by: Any) -> User | None:
    """`by` is who acted through a service: a user, or an API key. The user, when it is one."""
    return by if isinstance(by, User) else None


def actor_api_key(by: Any) -> ApiKey | None:
    """The API key, when `by` is one (its audit entries then name the key)."""
    return by if isinstance(by, ApiKey) else None


def audit_record(
    *,
    action: str,
    tenant_id: UUID | str | None,
    user: User | None = None,
    api_key: ApiKey | None = None,
    actor_label: str = "",
    target: Any = None,
    ip: str | None = None,
    user_agent: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Appends one audit event. Called by the service that does the audited write, in its
    transaction, so the write and its audit entry land together or not at all."""
    event = AuditEvent(
        tenant_id=tenant_id,
        actor_user=user if getattr(user, "pk", None) else None,
        actor_api_key=api_key,
        actor_label=(actor_label or getattr(user, "email", "") or (f"api-key:{api_key.prefix}" if api_key else ""))[:254],
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        ip=ip,
        user_agent=user_agent[:300],
        data=data or {},
    )
    if tenant_id is None:
        event.save()
    else:
        with tenant_atomic(tenant_id):
            event.save()
    return event


# --- API keys -----------------------------------------------------------------------------------

API_KEY_PREFIX = "lode_sk_"


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    secret: str  # the full key; shown to the caller once and never stored


def _key_hash(raw_key: str) -> str:
    # The key carries 240 bits of randomness: a plain SHA-256 cannot be brute-forced, and it lets
    # every request verify with one hash instead of a deliberately slow password hash.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(
    *,
    tenant_id: UUID | str,
    created_by: User | None,
    creator_permissions: frozenset[str],
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    ip: str | None = None,
) -> CreatedApiKey:
    from .permissions import ALL_SCOPES

    name = (name or "").strip()
    if not name:
        raise ValidationFailed("name: may not be blank", details={"field": "name"})
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValidationFailed(f"scopes: unknown scope {unknown[0]!r}", details={"field": "scopes", "known": list(ALL_SCOPES)})
    if not scopes:
        raise ValidationFailed("scopes: at least one scope is required", details={"field": "scopes"})
    beyond = sorted(set(scopes) - set(creator_permissions))
    if beyond:
        raise PermissionDenied(f"A key cannot have {beyond[0]}: your role lacks it.", details={"required": beyond[0]})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("expires_at: must be in the future", details={"field": "expires_at"})
    prefix = secrets.token_hex(6)
    raw_key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(30)}"
    with tenant_atomic(tenant_id, user_id=getattr(created_by, "pk", None)):
        api_key = ApiKey(
            tenant_id=tenant_id, name=name[:100], prefix=prefix, secret_hash=_key_hash(raw_key),
            scopes=sorted(set(scopes)), created_by=created_by if getattr(created_by, "pk", None) else None,
            expires_at=expires_at,
        )
        api_key.full_clean(exclude=["tenant", "created_by"])
        api_key.save()
        audit_record(tenant_id=tenant_id, action="api_key.created", user=created_by, target=api_key, ip=ip,
                     data={"name": api_key.name, "scopes": api_key.scopes})
    return CreatedApiKey(api_key=api_key, secret=raw_key)


def api_key_revoke(*, tenant_id: UUID | str, api_key_id: UUID | str, by: User | None, ip: str | None = None) -> ApiKey:
    with tenant_atomic(tenant_id):
        api_key = ApiKey.objects.select_for_update().filter(tenant_id=tenant_id, id=api_key_id).first()
        if api_key is None:
            raise NotFound("API key not found.")
        if api_key.revoked_at is None:
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
            audit_record(tenant_id=tenant_id, action="api_key.revoked", user=by, target=api_key, ip=ip)
    return api_key


def api_key_authenticate(*, raw_key: str, ip: str | None) -> ApiKey:
    """Finds the key by its prefix and proves it by hash; 401 for anything else (unknown, wrong,
    revoked or expired keys all read the same to the caller)."""
    from rest_framework.exceptions import AuthenticationFailed

    if not raw_key.startswith(API_KEY_PREFIX) or raw_key.count("_") < 3:
        raise AuthenticationFailed("Invalid API key.")
    prefix = raw_key[len(API_KEY_PREFIX):].split("_", 1)[0]
    # The lookup window stays open only until the caller sets the key's tenant (db_tenant_set).
    db_lookup_set(api_key_prefix=prefix)
    # No tenant is known yet: the unscoped manager, limited by RLS to this one prefix.
    api_key = ApiKey._base_manager.select_related("tenant").filter(prefix=prefix).first()
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, _key_hash(raw_key)):
        raise AuthenticationFailed("Invalid API key.")
    now = timezone.now()
    if api_key.revoked_at is not None:
        raise AuthenticationFailed("This API key was revoked.")
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise AuthenticationFailed("This API key has expired.")
    return api_key


def api_key_touch(*, api_key: ApiKey, ip: str | None) -> None:
    """Records the key's last use, at most once a minute (authentication stays a read on hot
    paths). Runs in the request's transaction, after its tenant context was set."""
    now = timezone.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60 or api_key.last_used_ip != ip:
        ApiKey.objects.filter(id=api_key.id, tenant_id=api_key.tenant_id).update(last_used_at=now, last_used_ip=ip)


# --- Invitations and members ------------------------------------------------------------------

INVITATION_TTL = timedelta(days=7)


@dataclass(frozen=True)
class CreatedInvitation:
    invitation: Invitation
    token: str  # emailed once; only its hash is stored


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _role_checked(role: str) -> str:
    if role not in Role.values:
        raise ValidationFailed(f"role: must be one of {', '.join(Role.values)}", details={"field": "role"})
    return role


def invitation_create(
    *, tenant_id: UUID | str, invited_by: User, email: str, role: str, ip: str | None = None
) -> CreatedInvitation:
    from django.conf import settings
    from django.core.mail import send_mail
    from django.core.validators import validate_email

    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except DjangoValidationError:
        raise ValidationFailed("email: enter a valid email address", details={"field": "email"}) from None
    _role_checked(role)
    if role == Role.OWNER:
        raise ValidationFailed("role: owners are not invited; promote a member instead", details={"field": "role"})
    token = secrets.token_urlsafe(32)
    with tenant_atomic(tenant_id, user_id=invited_by.pk):
        if Membership.objects.filter(organization_id=tenant_id, user__email__iexact=email).exists():
            raise Conflict(f"{email} is already a member.", details={"field": "email"})
        invitation = Invitation(
            tenant_id=tenant_id, email=email, role=role, token_hash=_token_hash(token), invited_by=invited_by,
            expires_at=timezone.now() + INVITATION_TTL,
        )
        invitation.full_clean(exclude=["tenant", "invited_by"])
        invitation.save()
        audit_record(tenant_id=tenant_id, action="invitation.created", user=invited_by, target=invitation, ip=ip,
                     data={"email": email, "role": role})
        organization = Organization.objects.get(id=tenant_id)
        link = f"{settings.LODE_PUBLIC_URL}/invitations/accept/{token}/"
        transaction.on_commit(lambda: send_mail(
            subject=f"You are invited to {organization.name} on Lode",
            message=f"{invited_by.email} invited you to join {organization.name} as {role}.\n\nAccept: {link}\n\n"
                    f"The link expires in {INVITATION_TTL.days} days.",
            from_email=None,
            recipient_list=[email],
        ))
    return CreatedInvitation(invitation=invitation, token=token)


def invitation_accept(*, token: str, user: User, ip: str | None = None) -> Membership:
    with tenant_atomic(None, user_id=user.pk):
        # tenant_atomic restores the caller's context on the way out, closing this lookup window.
        db_lookup_set(invitation_token=_token_hash(token))
        # No tenant is known yet: the unscoped manager, limited by RLS to this one token.
        invitation = Invitation._base_manager.select_for_update().filter(token_hash=_token_hash(token)).first()
        if invitation is None or invitation.revoked_at is not None:
            raise NotFound("This invitation does not exist or was revoked.")
        if invitation.accepted_at is not None:
            raise Conflict("This invitation was already accepted.")
        if invitation.expires_at <= timezone.now():
            raise ValidationFailed("This invitation has expired; ask for a new one.", details={"field": "token"})
        if invitation.email.lower() != user.email.lower():
            raise PermissionDenied("This invitation was sent to another email address.")
        with tenant_atomic(invitation.tenant_id, user_id=user.pk):
            membership, created = Membership.objects.get_or_create(
                user=user, organization_id=invitation.tenant_id, defaults={"role": invitation.role}
            )
            invitation.accepted_at = timezone.now()
            invitation.accepted_by = user
            invitation.save(update_fields=["accepted_at", "accepted_by"])
            audit_record(tenant_id=invitation.tenant_id, action="invitation.accepted", user=user, target=membership, ip=ip,
                         data={"role": membership.role, "new_member": created})
    return membership


def invitation_revoke(*, tenant_id: UUID | str, invitation_id: UUID | str, by: User | None, ip: str | None = None) -> Invitation:
    with tenant_atomic(tenant_id):
        invitation = Invitation.objects.select_for_update().filter(tenant_id=tenant_id, id=invitation_id).first()
        if invitation is None:
            raise NotFound("Invitation not found.")
        if invitation.accepted_at is not None:
            raise Conflict("This invitation was already accepted.")
        if invitation.revoked_at is None:
            invitation.revoked_at = timezone.now()
            invitation.save(update_fields=["revoked_at"])
            audit_record(tenant_id=tenant_id, action="invitation.revoked", user=by, target=invitation, ip=ip)
    return invitation


def _membership_locked(tenant_id: UUID | str, membership_id: UUID | str) -> Membership:
    membership = (
        Membership.objects.select_for_update().select_related("user").filter(organization_id=tenant_id, id=membership_id).first()
    )
    if membership is None:
        raise NotFound("Member not found.")
    return membership


def _ensure_an_owner_remains(tenant_id: UUID | str, leaving: Membership) -> None:
    if leaving.role == Role.OWNER and not Membership.objects.filter(
        organization_id=tenant_id, role=Role.OWNER
    ).exclude(id=leaving.id).exists():
        raise Conflict("An organization keeps at least one owner.")


def membership_role_change(
    *, tenant_id: UUID | str, membership_id: UUID | str, role: str, by: User | None, by_role: str, ip: str | None = None
) -> Membership:
    _role_checked(role)
    with tenant_atomic(tenant_id):
        membership = _membership_locked(tenant_id, membership_id)
        if Role.OWNER in (role, membership.role) and by_role != Role.OWNER:
            raise PermissionDenied("Only an owner can grant or take the owner role.", details={"required": "owner"})
        if membership.role != role:
            if role != Role.OWNER:
                _ensure_an_owner_remains(tenant_id, membership)
            previous = membership.role
            membership.role = role
            membership.full_clean()
            membership.save(update_fields=["role"])
            audit_record(tenant_id=tenant_id, action="member.role_changed", user=by, target=membership, ip=ip,
                         data={"email": membership.user.email, "from": previous, "to": role})
    return membership


def membership_remove(
    *, tenant_id: UUID | str, membership_id: UUID | str, by: User | None, by_role: str, ip: str | None = None
) -> None:
    with tenant_atomic(tenant_id):
        membership = _membership_locked(tenant_id, membership_id)
        if membership.role == Role.OWNER and by_role != Role.OWNER:
            raise PermissionDenied("Only an owner can remove an owner.", details={"required": "owner"})
        _ensure_an_owner_remains(tenant_id, membership)
        audit_record(tenant_id=tenant_id, action="member.removed", user=by, target=membership, ip=ip,
                     data={"email": membership.user.email, "role": membership.role})
        membership.delete()
