"""Dashboard forms: input shapes for the pages, nothing more. The services do the real checks;
a domain error they raise is put back on the field it names (`form_error_from`)."""
from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from lode.core.errors import LodeError
from tenants.permissions import ALL_SCOPES, ROLE_PERMISSIONS

# The role names and labels, in the order the tenancy app declares them (owner first).
ROLE_CHOICES: list[tuple[str, str]] = [
    (str(role.value if hasattr(role, "value") else role), str(getattr(role, "label", str(role).title())))
    for role in ROLE_PERMISSIONS
]
OWNER = "owner"


class JsonObjectField(forms.CharField):
    """A textarea holding a JSON object (empty: {}); `example` shows one in the error."""

    def __init__(self, *, example: str, **kwargs: Any):
        self.example = example
        super().__init__(**kwargs)

    def clean(self, value: Any) -> dict[str, Any]:
        text = (super().clean(value) or "").strip()
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON ({exc}).") from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError(f"A JSON object, such as {self.example}.")
        return parsed


class SignupForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}))
    password = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="A long password that is not a common one.",
    )
    organization_name = forms.CharField(
        label="Organization name", max_length=200, widget=forms.TextInput(attrs={"autocomplete": "organization"}),
    )
    full_name = forms.CharField(
        label="Your name", max_length=200, required=False, widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )


class OrganizationSwitchForm(forms.Form):
    organization_id = forms.UUIDField()


class InvitationForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)
    # Owners are promoted from members, never invited (tenants.services.invitation_create).
    role = forms.ChoiceField(label="Role", choices=[choice for choice in ROLE_CHOICES if choice[0] != OWNER])


class RoleChangeForm(forms.Form):
    role = forms.ChoiceField(label="Role", choices=ROLE_CHOICES)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100)
    scopes = forms.MultipleChoiceField(label="Scopes", widget=forms.CheckboxSelectMultiple)
    expires_on = forms.DateField(
        label="Expires after (optional)", required=False, widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The key stops working at the end of this day (UTC). Leave empty for a key that does not expire.",
    )

    def __init__(self, *args, grantable: frozenset[str], **kwargs):
        super().__init__(*args, **kwargs)
        # A key can never have more rights than its creator: offer only what the creator holds.
        self.fields["scopes"].choices = [(scope, scope) for scope in ALL_SCOPES if scope in grantable]

    def expires_at(self) -> datetime | None:
        day: date | None = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        return datetime.combine(day + timedelta(days=1), time.min, tzinfo=timezone.get_current_timezone())


def form_error_from(form: forms.Form, exc: LodeError, *, aliases: dict[str, str] | None = None) -> None:
    """Puts a service's error on the form field it names (details["field"], renamed through
    `aliases` where the form calls it otherwise), else on the form as a whole."""
    details = exc.details if isinstance(exc.details, dict) else {}
    field = details.get("field")
    message = exc.message
    if isinstance(field, str) and message.startswith(f"{field}: "):
        # Services prefix messages with the field name ("password: too short"); under the field
        # the prefix only repeats it.
        message = message[len(field) + 2:]
    field = (aliases or {}).get(field, field)
    if not (isinstance(field, str) and field in form.fields):
        form.add_error(None, message)
        return
    errors = details.get("errors")
    if isinstance(errors, list) and errors and all(isinstance(error, str) for error in errors):
        form.add_error(field, errors)  # e.g. every password rule that failed, not just the first
    else:
        form.add_error(field, message)
