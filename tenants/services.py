"""Writes for users and organizations."""
from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from lode.core.errors import Conflict, ValidationFailed

from .models import Membership, Organization, Role, User


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
    membership = Membership(user=user, organization=organization, role=Role.OWNER)
    membership.full_clean()
    membership.save()
    return SignupResult(user=user, organization=organization)
