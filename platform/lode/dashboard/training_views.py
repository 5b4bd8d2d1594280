"""Dashboard training pages: the tenant's fine-tunes and the form that starts one; a fine-tune with
its progress, live loss and evaluation curves, events, checkpoints, estimate and cancel button; the
model registry (the platform's base models and the tenant's fine-tuned models); a fine-tuned
model's page with its card, lineage, hyperparameters and metrics.

Reads go through lode.training.selectors (and lode.datasets.selectors for the versions a fine-tune
trains on), writes through lode.training.services; the page only shapes plain values for its
templates. Reading needs training:read, starting and cancelling training:write
(tenants.permissions: owners, admins and engineers have both)."""
from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django import forms
from django.core.exceptions import ValidationError
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from lode.billing import rendering
from lode.core.errors import LodeError, NotFound
from lode.datasets import selectors as dataset_selectors
from lode.training import selectors, services
from lode.training.hyperparameters import DEFAULTS, METHOD_DEFAULTS, METHODS, SPECS, TASK_DEFAULTS, TASKS
from tenants.db_context import tenant_atomic

from .forms import JsonObjectField, form_error_from
from .views import TenantActionView, TenantFormPageView

FINETUNES_SHOWN = 200
MODELS_SHOWN = 200
VERSIONS_OFFERED = 300
# The detail page lists this many of the latest events; the curves use every metric event.
EVENTS_SHOWN = 100
READY = "ready"
METHOD_LABELS = {"lora": "LoRA adapter", "full": "Full fine-tune"}
TASK_LABELS = {
    "sft": "Supervised fine-tuning (instruction or chat data)",
    "classification": "Classification",
    "dpo": "Preference tuning (DPO)",
    "text_to_image": "Text to image (LoRA)",
}
# Figures an evaluation reports besides its step and epoch; the first of these a model has is its
# headline in the registry.
EVAL_METRICS = ("val_loss", "perplexity", "accuracy", "f1_macro", "majority_baseline_accuracy", "reward_margin",
                "reward_accuracy", "bleu", "chrf")
KEY_METRICS = ("val_loss", "best_val_loss", "perplexity", "accuracy", "f1_macro", "reward_accuracy", "bleu", "chrf")
NOT_CHARTED = ("step", "epoch", "kind")


# --- Forms (input shapes only; the service does the real checks) --------------------------------


class FinetuneCreateForm(forms.Form):
    """The fine-tune request. The choices come from the catalog and the tenant's ready versions, so
    a version of another organization (or one not ready) is not even a valid choice."""

    base_model = forms.ChoiceField(label="Base model")
    train_version = forms.ChoiceField(label="Training data")
    validation_version = forms.ChoiceField(
        label="Validation data (optional)", required=False,
        help_text="Leave empty to hold out a share of the training data (hyperparameter validation_fraction).",
    )
    task = forms.ChoiceField(
        label="Task", required=False,
        choices=[("", "From the base model and the data")] + [(name, TASK_LABELS.get(name, name)) for name in TASKS],
    )
    method = forms.ChoiceField(label="Method", choices=[(name, METHOD_LABELS.get(name, name)) for name in METHODS],
                               initial="lora")
    hyperparameters = JsonObjectField(
        example='{"epochs": 2}', label="Hyperparameters (JSON, optional)", required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false",
                                     "placeholder": '{"epochs": 3, "learning_rate": 0.0002}'}),
        help_text="A JSON object; every key left out takes its default (listed below).",
    )
    suffix = forms.CharField(label="Name suffix (optional)", required=False, max_length=40,
                             help_text="Lowercase letters, digits and hyphens; it ends the fine-tuned model's name.")
    gpus = forms.IntegerField(label="GPUs", min_value=1, max_value=services.MAX_GPUS, initial=1)

    def __init__(self, *args: Any, base_models: list, versions: list[dict[str, Any]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["base_model"].choices = [
            (model.name, f"{model.display_name} ({model.name}, {model.get_task_type_display().lower()})")
            for model in base_models
        ]
        choices = [(str(version["id"]), version["label"]) for version in versions]
        self.fields["train_version"].choices = choices
        self.fields["validation_version"].choices = [("", "Hold out part of the training data")] + choices


def _finetune_error(form: FinetuneCreateForm, exc: LodeError) -> None:
    """The service names a hyperparameter as `hyperparameters.<key>`: the message stays whole
    under the JSON box, so the person sees which key."""
    field = (exc.details or {}).get("field") if isinstance(exc.details, dict) else None
    if isinstance(field, str) and field.startswith("hyperparameters"):
        form.add_error("hyperparameters", exc.message)
    else:
        form_error_from(form, exc)


# --- Plain values for the pages --------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ready_versions(*, tenant_id: UUID | str, limit: int = VERSIONS_OFFERED) -> list[dict[str, Any]]:
    """The tenant's ready dataset versions a fine-tune can train on, by dataset name then newest
    version first, each with a label naming its dataset, number, modality and rows (one query)."""
    with tenant_atomic(tenant_id):
        found = list(
            dataset_selectors.dataset_list(tenant_id=tenant_id)
            .filter(versions__status=READY)
            .order_by("name", "-versions__number")
            .values("name", "modality", "versions__id", "versions__number", "versions__status", "versions__row_count")
            [:limit]
        )
    return [
        {"id": row["versions__id"], "label": f"{row['name']} v{row['versions__number']} "
                                              f"({row['modality']}, {row['versions__row_count']} rows)"}
        for row in found if row["versions__status"] == READY
    ]


def estimate_parts(params: dict[str, Any], billing_estimate: dict[str, Any]) -> dict[str, Any] | None:
    """What the fine-tune was expected to take (training.hyperparameters.compute_estimate, kept in
    the job's params) and, when billing admitted it, what it was expected to cost."""
    estimate = params.get("estimate") if isinstance(params, dict) else None
    if not isinstance(estimate, dict):
        return None
    parts: dict[str, Any] = {
        "tokens": estimate.get("tokens"),
        "seconds": estimate.get("seconds"),
        "gpu_seconds": estimate.get("gpu_seconds"),
        "gpu_class": estimate.get("gpu_class", ""),
        "tokens_per_second": estimate.get("tokens_per_second"),
        "gpus": params.get("gpus"),
        "cost": "",
    }
    if isinstance(billing_estimate, dict) and _is_number(billing_estimate.get("estimated_cost_minor")) \
            and isinstance(billing_estimate.get("currency"), str):
        parts["cost"] = rendering.money_format(billing_estimate["estimated_cost_minor"], billing_estimate["currency"])
    return parts


def finetune_row(job) -> dict[str, Any]:
    """One fine-tune in the list: what it trains (from its params) and what it made (its result)."""
    params = job.params if isinstance(job.params, dict) else {}
    result = job.result if isinstance(job.result, dict) else {}
    return {
        "job": job,
        "base_model": params.get("base_model", ""),
        "task": params.get("task", ""),
        "method": params.get("method", ""),
        "model_name": result.get("model") if isinstance(result.get("model"), str) else "",
        "model_id": result.get("model_id") if isinstance(result.get("model_id"), str) else "",
    }


def _metric_order(names: dict[str, Any]) -> list[str]:
    """The known evaluation figures in their usual order, then any others by name."""
    return [key for key in EVAL_METRICS if key in names] + sorted(key for key in names if key not in EVAL_METRICS)


def metric_series(events: list) -> dict[str, Any]:
    """The fine-tune's curves from its metric events: train loss by step ({"x": step, "y": loss}
    points, for the loss chart), and one series per evaluation figure by step (val_loss on the
    loss axis, the task's metrics on their own); plus the latest training step's figures and the
    latest value of every evaluation figure (the generation eval's BLEU and chrF have no step)."""
    train: list[dict[str, float]] = []
    evaluation: dict[str, list[dict[str, float]]] = {}
    latest_train: dict[str, Any] = {}
    latest_eval: dict[str, Any] = {}
    for event in events:
        data = event.data
        if event.kind != "metric" or not isinstance(data, dict):
            continue
        step = data.get("step")
        has_step = _is_number(step)
        if data.get("kind") == "train":
            if has_step and _is_number(data.get("loss")):
                train.append({"x": step, "y": data["loss"]})
            latest_train = {key: value for key, value in data.items() if key != "kind"}
        elif data.get("kind") == "eval":
            for key, value in data.items():
                if key in NOT_CHARTED or not _is_number(value):
                    continue
                latest_eval[key] = value
                if has_step:
                    evaluation.setdefault(key, []).append({"x": step, "y": value})
    order = _metric_order(evaluation)
    eval_chart = {
        "x_title": "step",
        "y_title": "validation loss",
        "y1_title": "metric",
        "series": [{"label": key, "data": evaluation[key], "axis": "y" if key == "val_loss" else "y1"}
                   for key in order],
    }
    return {
        "train_points": train,
        "eval_chart": eval_chart if order else None,
        "latest_train": latest_train,
        "latest_eval": [{"name": key, "value": latest_eval[key]} for key in _metric_order(latest_eval)],
    }


def key_metrics(metrics: Any) -> list[dict[str, Any]]:
    """A model's headline figures for the registry table."""
    if not isinstance(metrics, dict):
        return []
    return [{"name": key, "value": metrics[key]} for key in KEY_METRICS if _is_number(metrics.get(key))]


def table_rows(mapping: Any) -> list[dict[str, Any]]:
    """A {name: value} mapping as sorted rows; lists, mappings, booleans and nulls shown as JSON
    (as the hyperparameters box takes them)."""
    if not isinstance(mapping, dict):
        return []
    rows = []
    for key in sorted(mapping):
        value = mapping[key]
        if isinstance(value, (dict, list, bool)) or value is None:
            value = json.dumps(value, ensure_ascii=False, default=str)
        rows.append({"name": key, "value": value})
    return rows


def hyperparameter_help() -> list[dict[str, Any]]:
    """Every hyperparameter with its kind, range or choices, where it applies and its default, for
    the start form's reference table."""
    rows = []
    for key, spec in SPECS.items():
        kind = spec.kind.__name__ if isinstance(spec.kind, type) else "/".join(kind.__name__ for kind in spec.kind)
        if spec.choices:
            allowed = ", ".join(spec.choices)
        elif spec.low is not None and spec.high is not None:
            allowed = f"{spec.low:g} – {spec.high:g}"
        else:
            allowed = ""
        applies = []
        if spec.tasks:
            applies.append(", ".join(spec.tasks))
        if spec.methods:
            applies.append(", ".join(spec.methods))
        if key in DEFAULTS:
            default = DEFAULTS[key]
        else:
            found = [defaults[key] for defaults in (*TASK_DEFAULTS.values(), *METHOD_DEFAULTS.values())
                     if key in defaults]
            default = found[0] if len(set(map(repr, found))) == 1 else ("per method" if found else "")
        if default is None or isinstance(default, bool):
            default = json.dumps(default)  # null, true, false: as the JSON box takes them
        rows.append({"name": key, "kind": kind, "allowed": allowed, "applies": " · ".join(applies) or "all",
                     "default": default})
    return rows


def _finetune_get(tenant_id: UUID | str, job_id: UUID | str):
    try:
        return selectors.finetune_get(tenant_id=tenant_id, job_id=job_id)
    except NotFound:
        # Missing and another tenant's fine-tune get the same answer.
        raise Http404("Fine-tune not found.") from None


def _version_or_none(tenant_id: UUID | str, version_id: Any):
    if not version_id:
        return None
    try:
        return dataset_selectors.version_get(tenant_id=tenant_id, version_id=version_id)
    except (NotFound, ValueError, ValidationError):
        return None


def _version_link(version, version_id: Any) -> dict[str, Any] | None:
    """A dataset version as lineage shows it: its dataset and number when it is still there, else
    only its id."""
    if not version_id:
        return None
    if version is None:
        return {"id": str(version_id), "label": str(version_id), "exists": False}
    return {"id": str(version.id), "label": f"{version.dataset.name} v{version.number}", "exists": True,
            "rows": version.row_count, "modality": version.modality}


# --- Pages ----------------------------------------------------------------------------------------


class TrainingPageView(TenantFormPageView):
    nav_active = "finetunes"
    read_permission = "training:read"
    write_permission = "training:write"
    manage_permission = "training:write"


class FinetuneListView(TrainingPageView):
    """The tenant's fine-tunes (re-fetched every 2 s while one is queued or running) and, for
    writers, the form that starts one (it posts here and goes to the new fine-tune's page)."""

    template_name = "dashboard/training/finetunes.html"
    fragments = {"finetunes-table": "dashboard/training/_finetunes_table.html"}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant_id = self.tenant.id
        with tenant_atomic(tenant_id):
            jobs = list(selectors.finetune_list(tenant_id=tenant_id)[:FINETUNES_SHOWN])
        context.update(
            finetunes=[finetune_row(job) for job in jobs],
            finetunes_active=any(not job.is_terminal for job in jobs),
            limit=FINETUNES_SHOWN,
        )
        if self.request.GET.get("fragment") is None and context["can_write"]:
            if "create_form" not in context:
                context["create_form"] = self._form()
            context.update(hyperparameter_help=hyperparameter_help())
        return context

    def _form(self, data: Any = None) -> FinetuneCreateForm:
        return FinetuneCreateForm(data, base_models=selectors.base_model_list(tenant_id=self.tenant.id),
                                  versions=ready_versions(tenant_id=self.tenant.id))

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = self._form(request.POST)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = services.finetune_create(
                    tenant_id=self.tenant.id, by=self.access.user, base_model=data["base_model"],
                    train_version_id=data["train_version"], validation_version_id=data["validation_version"] or None,
                    task=data["task"] or None, method=data["method"], hyperparameters=data["hyperparameters"],
                    suffix=data["suffix"], gpus=data["gpus"],
                )
            except LodeError as exc:
                _finetune_error(form, exc)
                status = exc.http_status
            else:
                messages.success(request, _started_message(job))
                return redirect("dashboard:finetune", job_id=job.id)
        return self.render_invalid(status, create_form=form)


def _started_message(job) -> str:
    params = job.params if isinstance(job.params, dict) else {}
    text = f"Fine-tune of {params.get('base_model', 'the base model')} ({params.get('task', '')}, " \
           f"{params.get('method', '')}) queued."
    estimate = estimate_parts(params, job.estimate)
    if estimate and _is_number(estimate["seconds"]):
        text += f" Estimated {estimate['tokens']:,} tokens, about {estimate['seconds']:g} s on " \
                f"{estimate['gpus']} × {estimate['gpu_class']} ({estimate['gpu_seconds']:g} GPU-seconds)"
        text += f", about {estimate['cost']}." if estimate["cost"] else "."
    return text


class FinetuneDetailView(TrainingPageView):
    """One fine-tune. Its changing part (state, progress, curves, events, checkpoints, the cancel
    button, the resulting model) re-fetches itself every 2 s (?fragment=finetune-live) until the
    job reaches a final state. The cancel button posts to its own route."""

    template_name = "dashboard/training/finetune.html"
    fragments = {"finetune-live": "dashboard/training/_finetune_live.html"}
    write_permission = None  # cancelling has its own route; a POST here is refused

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant_id = self.tenant.id
        job = _finetune_get(tenant_id, kwargs["job_id"])
        # Loaded here, whole: the template renders after the request's tenant context has ended.
        with tenant_atomic(tenant_id):
            events = list(selectors.finetune_events(tenant_id=tenant_id, job_id=job.id))
            checkpoints = list(selectors.finetune_checkpoints(tenant_id=tenant_id, job_id=job.id))
            model = selectors.finetune_model(tenant_id=tenant_id, job_id=job.id)
        shown = events[-EVENTS_SHOWN:]
        params = job.params if isinstance(job.params, dict) else {}
        context.update(
            job=job,
            finetune=finetune_row(job),
            model=model,
            events=list(reversed(shown)),
            events_total=len(events),
            events_hidden=len(events) - len(shown),
            checkpoints=list(reversed(checkpoints)),
            estimate=estimate_parts(params, job.estimate),
            can_cancel=context["can_write"] and not job.is_terminal,
            **metric_series(events),
        )
        if self.request.GET.get("fragment") is None:
            train_id, validation_id = params.get("train_version_id"), params.get("validation_version_id")
            context.update(
                train_version=_version_link(_version_or_none(tenant_id, train_id), train_id),
                validation_version=_version_link(_version_or_none(tenant_id, validation_id), validation_id),
                hyperparameters=table_rows(params.get("hyperparameters")),
            )
        return context


class FinetuneCancelView(TenantActionView):
    """The cancel button: a queued fine-tune is cancelled at once, a running one is asked to stop
    (its worker ends it within seconds, at its next check). Back to the fine-tune's page."""

    write_permission = "training:write"

    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        # Another tenant's or a missing fine-tune is a 404, not a message on somebody's page.
        _finetune_get(self.tenant.id, kwargs["job_id"])
        self.redirect_to = reverse("dashboard:finetune", kwargs={"job_id": kwargs["job_id"]})
        return super().post(request, **kwargs)

    def act(self, request: HttpRequest, **kwargs: Any) -> str:
        job = services.finetune_cancel(tenant_id=self.tenant.id, job_id=kwargs["job_id"], by=self.access.user)
        if job.state == "cancelled":
            return "Fine-tune cancelled."
        return "Cancellation requested: the worker stops the fine-tune at its next check."


class ModelRegistryView(TrainingPageView):
    """The base models every organization can fine-tune and this organization's fine-tuned models."""

    template_name = "dashboard/training/models.html"
    nav_active = "models"
    write_permission = None

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant_id = self.tenant.id
        with tenant_atomic(tenant_id):
            models = list(selectors.tuned_model_list(tenant_id=tenant_id)[:MODELS_SHOWN])
        context.update(
            base_models=selectors.base_model_list(tenant_id=self.tenant.id),
            models=[{"model": model, "metrics": key_metrics(model.metrics)} for model in models],
            limit=MODELS_SHOWN,
        )
        return context


class ModelDetailView(TrainingPageView):
    """A fine-tuned model: its card (shown as text, escaped), lineage (base model, dataset
    versions, the job that trained it), hyperparameters, metrics and labels."""

    template_name = "dashboard/training/model.html"
    nav_active = "models"
    write_permission = None

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant_id = self.tenant.id
        try:
            model = selectors.tuned_model_get(tenant_id=tenant_id, model_id=kwargs["model_id"])
        except NotFound:
            raise Http404("Model not found.") from None
        train = _version_or_none(tenant_id, model.train_version_id)
        validation = _version_or_none(tenant_id, model.validation_version_id)
        context.update(
            model=model,
            base_model=model.base_model,
            train_version=_version_link(train, model.train_version_id),
            validation_version=_version_link(validation, model.validation_version_id),
            hyperparameters=table_rows(model.hyperparameters),
            metrics=table_rows(model.metrics),
            labels=[label for label in model.labels if isinstance(label, str)] if isinstance(model.labels, list)
            else [],
        )
        return context
