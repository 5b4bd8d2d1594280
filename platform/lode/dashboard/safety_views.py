"""Dashboard safety pages: the moderation queue for a tenant's reviewers (counts, the open items
most overdue first with live SLA timers, claiming, one item's review panel, decisions with a reason,
bulk decisions, keyboard shortcuts in moderation.js), an item's page with its review history,
platform staff's escalations across tenants, and the safety policy in force with the form that
saves the next version and the export of reviewers' decisions as a dataset.

Reads go through lode.safety.selectors (plain values, loaded whole), writes through
lode.safety.moderation and lode.safety.services. Reading needs safety:read, deciding and claiming
safety:write (tenants.permissions: owners, admins and reviewers have both, engineers read only),
saving a policy version safety:policy (owners and admins) and exporting reviews datasets:write too. Forms post here; a refusal is put back on the field it names (a reason missing for a
rejection, a regex that does not compile), never a 500. The escalations page is no tenant's: it
is for platform staff (is_staff), whatever organization they act for."""
from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.generic import TemplateView

from lode.core.errors import LodeError, NotFound, PermissionDenied
from lode.safety import moderation, selectors, services
from lode.safety.detectors.base import CATEGORIES
from lode.training import selectors as training_selectors
from tenants.db_context import tenant_atomic

from .forms import form_error_from
from .views import TenantFormPageView, _discard_writes, _render_error, forbidden, shell_context

QUEUE_SHOWN = 100
# The open view keeps what the reviewer decided this recently, with its new state.
RECENT_MINUTES = 30
DEFAULT_CLAIM = 5
ESCALATIONS_SHOWN = 200
CLASSIFIERS_OFFERED = 100
STATE_VALUES = tuple(value for value, _ in selectors.STATE_FILTERS)
SOURCE_VALUES = tuple(value for value, _ in selectors.SOURCE_CHOICES)
VERDICT_CHOICES = [("approve", "Approve"), ("reject", "Reject"), ("escalate", "Escalate")]
BLOCKLIST_KINDS = ("term", "regex", "phrase")
PHRASE_THRESHOLD = re.compile(r"\s+threshold=(\S+)$")


# --- Forms (input shapes only; the services do the real checks) ------------------------------------


class ClaimForm(forms.Form):
    count = forms.IntegerField(label="How many", min_value=1, max_value=moderation.MAX_CLAIM, initial=DEFAULT_CLAIM)


class DecisionForm(forms.Form):
    verdict = forms.ChoiceField(label="Verdict", choices=VERDICT_CHOICES)
    reason = forms.CharField(label="Reason", required=False, max_length=moderation.MAX_REASON,
                             widget=forms.Textarea(attrs={"rows": 2}))


class ItemIdsField(forms.Field):
    """The ticked items of the list: one `items` value per checkbox, each an item id."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[str]:
        values = [str(v).strip() for v in (value or []) if str(v).strip()]
        for text in values:
            try:
                UUID(text)
            except ValueError:
                raise ValidationError(f"{text[:40]!r} is not an item id.") from None
        return list(dict.fromkeys(values))

    def validate(self, value: list[str]) -> None:
        if not value:
            raise ValidationError("Tick at least one item in the list.")
        if len(value) > moderation.MAX_BULK:
            raise ValidationError(f"At most {moderation.MAX_BULK} items at once.")


class BulkDecisionForm(forms.Form):
    items = ItemIdsField(required=False)
    verdict = forms.ChoiceField(label="Verdict", choices=VERDICT_CHOICES[:2])
    reason = forms.CharField(label="Reason for the selected items", required=False, max_length=moderation.MAX_REASON,
                             help_text="Required to reject.")


class EscalationDecisionForm(forms.Form):
    item_id = forms.UUIDField()
    verdict = forms.ChoiceField(label="Verdict", choices=VERDICT_CHOICES[:2])
    reason = forms.CharField(label="Reason", required=False, max_length=moderation.MAX_REASON)


def blocklist_parse(text: str) -> tuple[list[Any], list[int]]:
    """The blocklist box: a JSON list of entries, or one entry a line, `<kind> [<category>]
    <value>` (kind term, regex or phrase; the category one of Lode's, blocklist when left out; a
    phrase may end with ` threshold=0.8`). Blank lines and lines starting with # are skipped.
    Returns the entries and, for lines, the line number of each (to name it in errors)."""
    stripped = (text or "").strip()
    if not stripped:
        return [], []
    if stripped.startswith("["):
        try:
            entries = json.loads(stripped)
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON ({exc}).") from None
        return entries, []
    entries, lines = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, rest = line.partition(" ")
        kind = kind.lower()
        if kind not in BLOCKLIST_KINDS:
            raise ValidationError(f"line {number}: start with term, regex or phrase, then the category and the "
                                  f"value (got {line[:60]!r}).")
        rest = rest.strip()
        first, _, after = rest.partition(" ")
        category, value = (first, after.strip()) if first in CATEGORIES and after.strip() else ("blocklist", rest)
        entry: dict[str, Any] = {"kind": kind, "category": category, "value": value}
        if kind == "phrase":
            found = PHRASE_THRESHOLD.search(value)
            if found:
                try:
                    entry["threshold"] = float(found.group(1))
                except ValueError:
                    raise ValidationError(f"line {number}: threshold= takes a number above 0 and at most 1.") from None
                entry["value"] = value[:found.start()].strip()
        if not entry["value"]:
            raise ValidationError(f"line {number}: a {kind} needs a value.")
        entries.append(entry)
        lines.append(number)
    return entries, lines


def blocklist_text(entries: list[dict[str, Any]]) -> str:
    """The policy's blocklist as the box's lines."""
    lines = []
    for entry in entries:
        line = f"{entry['kind']} {entry['category']} {entry['value']}"
        if entry["kind"] == "phrase" and entry.get("threshold") is not None:
            line += f" threshold={entry['threshold']:g}"
        lines.append(line)
    return "\n".join(lines)


class PolicyForm(forms.Form):
    """The next policy version: a threshold and an action per category, the blocklist, and the
    settings. The service checks it all again; its errors come back on these fields."""

    blocklist = forms.CharField(
        label="Blocklist", required=False, widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="One entry a line: term, regex or phrase, then the category (blocklist when left out), then the "
                  "value; a phrase may end with threshold=0.8 (similarity). Or a JSON list of "
                  '{"kind", "category", "value", "threshold"} objects. Lines starting with # are skipped.')
    flagged_output = forms.ChoiceField(label="Flagged model output", choices=selectors.POLICY_CHOICES["flagged_output"])
    stream_release = forms.ChoiceField(label="Streaming release", choices=selectors.POLICY_CHOICES["stream_release"])
    image_review = forms.ChoiceField(label="Image review", choices=selectors.POLICY_CHOICES["image_review"])
    image_sample_rate = forms.FloatField(label="Image sample rate", min_value=0.0, max_value=1.0,
                                         help_text="The share of images reviewed when image review is “A sample”.")
    training_flagged_rate_limit = forms.FloatField(
        label="Training data limit", min_value=0.0, max_value=1.0,
        help_text="A fine-tune whose data has more flagged or blocked rows than this share is refused.")
    semantic = forms.BooleanField(label="Run the semantic (embedding) blocklist on requests", required=False)
    classifier = forms.CharField(label="Safety classifier (optional)", required=False, max_length=150,
                                 help_text="The name of the organization's sequence-classification fine-tune with an "
                                           "“unsafe” label; empty for none.")
    review_sla_minutes = forms.IntegerField(label="Review SLA (minutes)", min_value=1, max_value=60 * 24 * 30)
    note = forms.CharField(label="Note (optional)", required=False, max_length=2000)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.blocklist_lines: list[int] = []
        for category in CATEGORIES:
            self.fields[f"rule_{category}_threshold"] = forms.FloatField(
                label=f"{category} threshold", min_value=0.0, max_value=1.0,
                widget=forms.NumberInput(attrs={"step": "0.01"}))
            self.fields[f"rule_{category}_action"] = forms.ChoiceField(
                label=f"{category} action", choices=selectors.POLICY_CHOICES["action"])

    def rule_rows(self) -> list[dict[str, Any]]:
        return [{"category": category, "threshold": self[f"rule_{category}_threshold"],
                 "action": self[f"rule_{category}_action"]} for category in CATEGORIES]

    def clean_blocklist(self) -> list[Any]:
        entries, self.blocklist_lines = blocklist_parse(self.cleaned_data.get("blocklist") or "")
        return entries

    def policy_values(self) -> dict[str, Any]:
        data = self.cleaned_data
        rules = {category: {"threshold": data[f"rule_{category}_threshold"], "action": data[f"rule_{category}_action"]}
                 for category in CATEGORIES}
        return {
            "rules": rules, "blocklist": data["blocklist"], "flagged_output": data["flagged_output"],
            "stream_release": data["stream_release"], "image_review": data["image_review"],
            "image_sample_rate": data["image_sample_rate"],
            "training_flagged_rate_limit": data["training_flagged_rate_limit"], "semantic": data["semantic"],
            "classifier": data["classifier"].strip() or None, "review_sla_minutes": data["review_sla_minutes"],
            "note": data["note"],
        }

    @staticmethod
    def initial_from(policy: dict[str, Any]) -> dict[str, Any]:
        initial = {key: policy[key] for key in ("flagged_output", "stream_release", "image_review", "image_sample_rate",
                                                "training_flagged_rate_limit", "semantic", "classifier",
                                                "review_sla_minutes")}
        initial["blocklist"] = blocklist_text(policy["blocklist"])
        for rule in policy["rules"]:
            initial[f"rule_{rule['category']}_threshold"] = rule["threshold"]
            initial[f"rule_{rule['category']}_action"] = rule["action"]
        return initial


_RULE_FIELD = re.compile(r"rules\.(\w+)(?:\.(threshold|action))?$")
_BLOCKLIST_FIELD = re.compile(r"blocklist\[(\d+)\]")


def _policy_error(form: PolicyForm, exc: LodeError) -> None:
    """A rule's error goes on that category's input, a blocklist entry's under the box naming its
    line (and the entry's field), anything else where form_error_from puts it."""
    field = (exc.details or {}).get("field") if isinstance(exc.details, dict) else None
    field = field if isinstance(field, str) else ""
    rule = _RULE_FIELD.match(field)
    if rule and rule.group(1) in CATEGORIES:
        message = exc.message[len(field) + 2:] if exc.message.startswith(f"{field}: ") else exc.message
        form.add_error(f"rule_{rule.group(1)}_{rule.group(2) or 'action'}", message)
        return
    entry = _BLOCKLIST_FIELD.match(field)
    if entry:
        index = int(entry.group(1))
        where = f"line {form.blocklist_lines[index]}: " if index < len(form.blocklist_lines) else ""
        form.add_error("blocklist", f"{where}{exc.message}")
        return
    form_error_from(form, exc)


class ReviewExportForm(forms.Form):
    name = forms.CharField(label="Dataset name (optional)", required=False, max_length=200,
                           help_text="Empty: safety-reviews-<date and time>.")


# --- Helpers -------------------------------------------------------------------------------------------


def queue_filters(data: Any) -> dict[str, str]:
    """The queue's state and source filters from a query string or a form (unknown values: none)."""
    state = data.get("state") or "open"
    source = data.get("source") or ""
    return {"state": state if state in STATE_VALUES else "open", "source": source if source in SOURCE_VALUES else ""}


def queue_url(*, state: str = "open", source: str = "", item: str | None = None, fragment: str | None = None) -> str:
    params = [(key, value) for key, value in (("state", "" if state == "open" else state), ("source", source),
                                              ("item", item or ""), ("fragment", fragment or "")) if value]
    url = reverse("dashboard:moderation")
    return f"{url}?{urlencode(params)}" if params else url


def _decided_message(item: Any) -> str:
    if item.state == "escalated":
        return "Escalated: platform staff decide it now."
    if item.state == "approved":
        return "Approved: the held output is released." if item.held else "Approved."
    return "Rejected: the held content is purged." if item.held else "Rejected."


def _plural(count: int, word: str = "item") -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# --- Tenant pages ----------------------------------------------------------------------------------------


class SafetyPageView(TenantFormPageView):
    nav_active = "moderation"
    read_permission = "safety:read"
    write_permission = "safety:write"
    manage_permission = "safety:write"
    safety_tab = ""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["safety_tab"] = self.safety_tab
        return context

    @property
    def reviewer_id(self) -> Any:
        return self.access.user.pk if self.access.user is not None else None


class QueueContextMixin:
    """What the queue page shows: the counts, the list, and the review panel of the selected item
    (by default the reviewer's most overdue claimed one). Shared by the queue and by the item
    route, which shows the queue again when a decision posted from it fails."""

    def item_panel(self, item: dict[str, Any] | None) -> dict[str, Any]:
        reviewer_id = self.reviewer_id
        decidable = bool(item) and self.can("safety:write") and item["is_open"] and item["state"] != "escalated"
        claimed_by_other = bool(item) and item["claim_live"] and item["claimed_by_id"] != reviewer_id
        return {"item": item, "decidable": decidable, "claimed_by_other": claimed_by_other}

    def queue_context(self, *, filters: dict[str, str], selected_id: str | None,
                      panel_only: bool = False) -> dict[str, Any]:
        tenant_id = self.tenant.id
        mine = claimed_by_reviewer_ids(tenant_id, self.reviewer_id)
        selected_id = selected_id or (mine[0] if mine else None)
        item, item_missing = None, False
        if selected_id:
            try:
                item = selectors.item_get(tenant_id=tenant_id, item_id=selected_id)
            except NotFound:
                item_missing = True  # another tenant's and a missing item read the same
        context = {**self.item_panel(item), "item_missing": item_missing, "filters": filters,
                   "return_to": "queue", "claimed_count": len(mine)}
        if panel_only:
            return context
        rows = selectors.queue_page(tenant_id=tenant_id, state=filters["state"], source=filters["source"] or None,
                                    limit=QUEUE_SHOWN, recent_reviewer_id=self.reviewer_id,
                                    recent_minutes=RECENT_MINUTES)
        for row in rows:
            row["page_url"] = queue_url(**filters, item=row["id"])
            row["panel_url"] = queue_url(**filters, item=row["id"], fragment="review-panel")
            row["is_current"] = item is not None and row["id"] == item["id"]
        context.update(
            rows=rows,
            counts=selectors.queue_counts(tenant_id=tenant_id),
            state_filters=selectors.STATE_FILTERS,
            source_choices=selectors.SOURCE_CHOICES,
            limit=QUEUE_SHOWN,
            recent_minutes=RECENT_MINUTES,
            claim_minutes=moderation.CLAIM_MINUTES,
            any_selectable=any(row["is_open"] and row["state"] != "escalated" for row in rows),
        )
        return context


def claimed_by_reviewer_ids(tenant_id: Any, reviewer_id: Any) -> list[str]:
    if reviewer_id is None:
        return []
    return selectors.claimed_by_reviewer(tenant_id=tenant_id, reviewer_id=reviewer_id)


class ModerationQueueView(QueueContextMixin, SafetyPageView):
    """The queue. Its forms post here: `action=claim` (the next N items, most overdue first) and
    `action=bulk` (the ticked items approved or rejected with one reason). A decision on the open
    item posts to the item's route. ?item=<id> opens an item in the review panel; the panel alone
    is ?fragment=review-panel (what j/k fetch), the navigation's badge ?fragment=nav-badge."""

    template_name = "dashboard/safety/queue.html"
    fragments = {"review-panel": "dashboard/safety/_review_panel.html", "nav-badge": "dashboard/safety/_nav_badge.html"}
    safety_tab = "queue"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        filters = kwargs.pop("filters", None) or queue_filters(self.request.GET)
        context = super().get_context_data(**kwargs)
        fragment = self.request.GET.get("fragment")
        if fragment == "nav-badge":
            context["open_count"] = selectors.queue_open_count(tenant_id=self.tenant.id)
            return context
        context.update(self.queue_context(filters=filters, selected_id=self.request.GET.get("item") or None,
                                          panel_only=fragment == "review-panel"))
        context.setdefault("decision_form", DecisionForm())
        context.setdefault("claim_form", ClaimForm())
        bulk_form = context.setdefault("bulk_form", BulkDecisionForm())
        if bulk_form.is_bound:  # a refused bulk decision keeps its items ticked
            ticked = set(bulk_form.data.getlist("items"))
            for row in context.get("rows", []):
                row["is_ticked"] = row["id"] in ticked
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        filters = queue_filters(request.POST)
        action = request.POST.get("action")
        if action == "claim":
            return self._claim(request, filters)
        if action == "bulk":
            return self._bulk(request, filters)
        return self.render_invalid(400, filters=filters,
                                   page_error="Choose what to do: claim the next items, or decide the ticked ones.")

    def _claim(self, request: HttpRequest, filters: dict[str, str]) -> HttpResponse:
        form = ClaimForm(request.POST)
        status = 400
        if form.is_valid():
            try:
                claimed = moderation.items_claim(tenant_id=self.tenant.id, by=self.access.user,
                                                 count=form.cleaned_data["count"])
            except LodeError as exc:
                form_error_from(form, exc)
                status = exc.http_status
            else:
                if not claimed:
                    messages.info(request, "Nothing to claim: no pending item is waiting.")
                    return redirect(queue_url(**filters))
                messages.success(request, f"Claimed {_plural(len(claimed))}, the most overdue first; they are yours "
                                          f"for {moderation.CLAIM_MINUTES} minutes.")
                return redirect(queue_url(**filters, item=str(claimed[0].id)))
        return self.render_invalid(status, filters=filters, claim_form=form)

    def _bulk(self, request: HttpRequest, filters: dict[str, str]) -> HttpResponse:
        form = BulkDecisionForm(request.POST)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                result = moderation.items_bulk_decide(tenant_id=self.tenant.id, item_ids=data["items"],
                                                      by=self.access.user, verdict=data["verdict"],
                                                      reason=data["reason"])
            except LodeError as exc:
                form_error_from(form, exc)
                status = exc.http_status
            else:
                decided, skipped = result["decided"], result["skipped"]
                done = "Approved" if data["verdict"] == "approve" else "Rejected"
                if decided:
                    messages.success(request, f"{done} {_plural(len(decided))}; skipped {len(skipped)}.")
                if skipped:
                    messages.warning(request, f"Skipped {_plural(len(skipped))}: " + "; ".join(
                        f"{entry['id'][:8]}… ({entry['why']})" for entry in skipped[:10])
                        + (" …" if len(skipped) > 10 else ""))
                mine = claimed_by_reviewer_ids(self.tenant.id, self.reviewer_id)
                return redirect(queue_url(**filters, item=mine[0] if mine else None))
        return self.render_invalid(status, filters=filters, bulk_form=form)


class ModerationItemView(QueueContextMixin, SafetyPageView):
    """One item: its content, context, scores and review history, and the decision form. A
    decision posted from the queue (return_to=queue) goes back to the queue with the reviewer's
    next claimed item open; when it fails, the queue is shown again with the error on its field."""

    template_name = "dashboard/safety/item.html"
    queue_template_name = "dashboard/safety/queue.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        filters = kwargs.pop("filters", None)
        context = super().get_context_data(**kwargs)
        if filters is not None:  # a failed decision from the queue: the queue again, this item open
            context.update(self.queue_context(filters=filters, selected_id=str(self.kwargs["item_id"])))
            context["safety_tab"] = "queue"
            context.setdefault("claim_form", ClaimForm())
            context.setdefault("bulk_form", BulkDecisionForm())
        else:
            item = selectors.item_get(tenant_id=self.tenant.id, item_id=self.kwargs["item_id"])
            context.update(self.item_panel(item), return_to="item")
        context.setdefault("decision_form", DecisionForm())
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # The item first: another tenant's or a missing one is a 404 whatever the form says.
        item = selectors.item_get(tenant_id=self.tenant.id, item_id=kwargs["item_id"])
        from_queue = request.POST.get("return_to") == "queue"
        filters = queue_filters(request.POST)
        form = DecisionForm(request.POST)
        status = 400
        if form.is_valid():
            try:
                decided = moderation.item_decide(tenant_id=self.tenant.id, item_id=item["id"], by=self.access.user,
                                                 verdict=form.cleaned_data["verdict"],
                                                 reason=form.cleaned_data["reason"])
            except LodeError as exc:
                form_error_from(form, exc)
                status = exc.http_status
            else:
                messages.success(request, _decided_message(decided))
                if from_queue:
                    mine = claimed_by_reviewer_ids(self.tenant.id, self.reviewer_id)
                    return redirect(queue_url(**filters, item=mine[0] if mine else None))
                return redirect("dashboard:moderation-item", item_id=item["id"])
        if from_queue:
            self.template_name = self.queue_template_name
            return self.render_invalid(status, filters=filters, decision_form=form)
        return self.render_invalid(status, decision_form=form)


class SafetyPolicyView(SafetyPageView):
    """The policy in force (version 0 is the platform's default) and its versions; for writers the
    form that saves the next version (`action=save`) and the export of reviewers' decisions as a
    classification dataset (`action=export`), which goes to the new dataset version's page."""

    template_name = "dashboard/safety/policy.html"
    safety_tab = "policy"
    # Reviewers decide items but do not set the rules they are held to: saving a version (and
    # exporting, which also needs datasets:write) is for owners and admins.
    write_permission = "safety:policy"
    manage_permission = "safety:policy"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant_id = self.tenant.id
        policy = selectors.policy_in_force(tenant_id=tenant_id)
        labels = {name: dict(selectors.POLICY_CHOICES[name]).get(policy[name], policy[name])
                  for name in ("flagged_output", "stream_release", "image_review")}
        context.update(policy=policy, policy_labels=labels, versions=selectors.policy_versions(tenant_id=tenant_id))
        if context["can_write"]:
            context.setdefault("policy_form", PolicyForm(initial=PolicyForm.initial_from(policy)))
            context.setdefault("export_form", ReviewExportForm())
            with tenant_atomic(tenant_id):
                context["classifiers"] = list(
                    training_selectors.tuned_model_list(tenant_id=tenant_id)
                    .filter(task_type="sequence_classification").values_list("name", flat=True)[:CLASSIFIERS_OFFERED])
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        action = request.POST.get("action")
        if action == "save":
            return self._save(request)
        if action == "export":
            return self._export(request)
        return self.render_invalid(
            400, page_error="Choose what to do: save a new policy version, or export the reviews.")

    def _save(self, request: HttpRequest) -> HttpResponse:
        form = PolicyForm(request.POST)
        status = 400
        if form.is_valid():
            try:
                policy = services.policy_create(tenant_id=self.tenant.id, by=self.access.user, **form.policy_values())
            except LodeError as exc:
                _policy_error(form, exc)
                status = exc.http_status
            else:
                messages.success(request, f"Saved policy version {policy.version}: checks use it from now on.")
                return redirect("dashboard:safety-policy")
        return self.render_invalid(status, policy_form=form)

    def _export(self, request: HttpRequest) -> HttpResponse:
        if not self.can("datasets:write"):
            return forbidden(request, "datasets:write")
        form = ReviewExportForm(request.POST)
        status = 400
        if form.is_valid():
            try:
                version = services.review_export(tenant_id=self.tenant.id, by=self.access.user,
                                                 name=form.cleaned_data["name"])
                with tenant_atomic(self.tenant.id):
                    name = version.dataset.name
            except LodeError as exc:
                form_error_from(form, exc)
                if not form.errors:
                    form.add_error(None, exc.message)
                status = exc.http_status
            else:
                messages.success(request, f"Exported the reviews as {name} v{version.number}: it is being checked "
                                          "and stored; fine-tune a sequence classifier on it once it is ready.")
                return redirect("dashboard:dataset-version", version_id=version.id)
        return self.render_invalid(status, export_form=form)


# --- Platform staff ------------------------------------------------------------------------------------------


class EscalationsView(LoginRequiredMixin, TemplateView):
    """Every tenant's escalated items, for platform staff only (anyone else: 403), whatever
    organization the staff member acts for. Its forms post here: `action=claim` (the next N,
    most overdue first) and `action=decide` (approve or reject one item with a reason)."""

    template_name = "dashboard/safety/escalations.html"
    http_method_names = ["get", "post"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not request.user.is_staff:
            return _render_error(request, PermissionDenied("The escalations page is for platform staff only."))
        try:
            return super().dispatch(request, *args, **kwargs)
        except LodeError as exc:
            return _render_error(request, exc)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(shell_context(self.request))
        items = selectors.escalation_list(user=self.request.user, limit=ESCALATIONS_SHOWN)
        # A decision that failed shows its errors on its item's row; one whose item is not listed
        # (decided meanwhile, or no such item) above the list.
        failed: EscalationDecisionForm | None = kwargs.get("decision_form")
        failed_id = str(failed.data.get("item_id")) if failed is not None else None
        for item in items:
            item["form"] = failed if item["id"] == failed_id else None
        if failed is not None and not any(item["form"] is not None for item in items):
            context["page_error"] = " ".join(str(error) for errors in failed.errors.values() for error in errors)
        context.update(nav_active="escalations", safety_tab="escalations", items=items, limit=ESCALATIONS_SHOWN,
                       user_id=self.request.user.pk)
        context.setdefault("claim_form", ClaimForm())
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        action = request.POST.get("action")
        if action == "claim":
            form = ClaimForm(request.POST)
            if form.is_valid():
                try:
                    claimed = moderation.escalation_claim(user=request.user, count=form.cleaned_data["count"])
                except LodeError as exc:
                    form_error_from(form, exc)
                    return self._invalid(exc.http_status, claim_form=form)
                messages.success(request, f"Claimed {_plural(len(claimed))}." if claimed
                                 else "Nothing to claim: no escalated item is waiting.")
                return redirect("dashboard:moderation-escalations")
            return self._invalid(400, claim_form=form)
        if action == "decide":
            form = EscalationDecisionForm(request.POST)
            status = 400
            if form.is_valid():
                data = form.cleaned_data
                try:
                    item = moderation.escalation_decide(user=request.user, item_id=data["item_id"],
                                                        verdict=data["verdict"], reason=data["reason"])
                except LodeError as exc:
                    form_error_from(form, exc)
                    status = exc.http_status
                else:
                    messages.success(request, f"{_decided_message(item)} (item {str(item.id)[:8]}…)")
                    return redirect("dashboard:moderation-escalations")
            return self._invalid(status, decision_form=form)
        return self._invalid(400, page_error="Choose what to do: claim escalations, or decide one.")

    def _invalid(self, status: int, **forms_in_error: Any) -> HttpResponse:
        response = self.render_to_response(self.get_context_data(**forms_in_error), status=status)
        response.render()
        _discard_writes()
        return response
