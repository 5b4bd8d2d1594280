"""Writes and reads of a tenant's prompt templates and example sets, and the one place a request's
`template` object is turned into messages or a prompt (used by the OpenAI-compatible API, the
playground and batch generation jobs)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from lode.core.errors import Conflict, NotFound, ValidationFailed
from tenants.db_context import tenant_atomic
from tenants.services import actor_api_key, actor_user, audit_record

from .models import ExampleSet, PromptTemplate
from .templates import MAX_EXAMPLES, Rendered, Template, TemplateInvalid, examples_check, render, values_check

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


def _invalid(exc: TemplateInvalid, prefix: str = "") -> ValidationFailed:
    field = f"{prefix}{exc.field}"
    return ValidationFailed(f"{field}: {str(exc).split(': ', 1)[1]}", details={"field": field})


def _name_checked(name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValidationFailed("name: 1 to 100 lower-case letters, digits, '-' or '_', starting with a letter or digit",
                               details={"field": "name"})
    return name


def _text(value: Any, field: str, *, limit: int = 32_000) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationFailed(f"{field}: text of at most {limit} characters", details={"field": field})
    return value


def _max_examples(value: Any, field: str = "max_examples") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EXAMPLES:
        raise ValidationFailed(f"{field}: a whole number from 0 to {MAX_EXAMPLES}", details={"field": field})
    return value


# --- Example sets ---------------------------------------------------------------------------------


def example_set_get(*, tenant_id: UUID | str, name: str) -> ExampleSet:
    with tenant_atomic(tenant_id):
        found = ExampleSet.objects.filter(name=name).first()
    if found is None:
        raise NotFound(f"No example set named {name!r}.", details={"name": name})
    return found


def example_set_list(*, tenant_id: UUID | str) -> list[ExampleSet]:
    with tenant_atomic(tenant_id):
        return list(ExampleSet.objects.order_by("name"))


def _templates_check_examples(example_set: ExampleSet) -> None:
    for template in PromptTemplate.objects.filter(example_set=example_set):
        try:
            Template(template=template.template, system=template.system, defaults=template.defaults).examples_check(
                example_set.examples)
        except TemplateInvalid as exc:
            raise ValidationFailed(f"{exc.field}: {str(exc).split(': ', 1)[1]} (the template {template.name!r} "
                                   "uses this set)", details={"field": exc.field, "template": template.name}) from None


def example_set_create(*, tenant_id: UUID | str, by: Any, name: Any, examples: Any, description: Any = "") -> ExampleSet:
    name = _name_checked(name)
    try:
        clean = examples_check(examples)
    except TemplateInvalid as exc:
        raise _invalid(exc) from None
    with tenant_atomic(tenant_id):
        example_set = ExampleSet(tenant_id=tenant_id, name=name, examples=clean,
                                 description=_text(description, "description", limit=5000), created_by=actor_user(by))
        try:
            with transaction.atomic():
                example_set.save()
        except IntegrityError:
            raise Conflict(f"name: an example set named {name!r} exists already", details={"field": "name"}) from None
        audit_record(tenant_id=tenant_id, action="generation.example_set_created", user=actor_user(by),
                     api_key=actor_api_key(by), target=example_set, data={"name": name, "examples": len(clean)})
    return example_set


def example_set_update(*, tenant_id: UUID | str, by: Any, name: str, changes: dict[str, Any]) -> ExampleSet:
    """Changes the examples or description; every template using the set must still accept them."""
    unknown = sorted(set(changes) - {"examples", "description"})
    if unknown:
        raise ValidationFailed(f"{unknown[0]}: not a field that can be changed (examples, description)",
                               details={"field": unknown[0]})
    with tenant_atomic(tenant_id):
        example_set = ExampleSet.objects.select_for_update().filter(name=name).first()
        if example_set is None:
            raise NotFound(f"No example set named {name!r}.", details={"name": name})
        if "examples" in changes:
            try:
                example_set.examples = examples_check(changes["examples"])
            except TemplateInvalid as exc:
                raise _invalid(exc) from None
            _templates_check_examples(example_set)
        if "description" in changes:
            example_set.description = _text(changes["description"], "description", limit=5000)
        example_set.version += 1
        example_set.updated_at = timezone.now()
        example_set.save()
        audit_record(tenant_id=tenant_id, action="generation.example_set_updated", user=actor_user(by),
                     api_key=actor_api_key(by), target=example_set, data={"name": name, "version": example_set.version})
    return example_set


def example_set_delete(*, tenant_id: UUID | str, by: Any, name: str) -> None:
    with tenant_atomic(tenant_id):
        example_set = ExampleSet.objects.select_for_update().filter(name=name).first()
        if example_set is None:
            raise NotFound(f"No example set named {name!r}.", details={"name": name})
        users = list(PromptTemplate.objects.filter(example_set=example_set).values_list("name", flat=True)[:10])
        if users:
            raise Conflict(f"The templates {', '.join(users)} use this example set; it is kept.",
                           details={"templates": users})
        audit_record(tenant_id=tenant_id, action="generation.example_set_deleted", user=actor_user(by),
                     api_key=actor_api_key(by), target=example_set, data={"name": name})
        example_set.delete()


# --- Templates ------------------------------------------------------------------------------------


def template_get(*, tenant_id: UUID | str, name: str) -> PromptTemplate:
    with tenant_atomic(tenant_id):
        found = PromptTemplate.objects.select_related("example_set").filter(name=name).first()
    if found is None:
        raise NotFound(f"No prompt template named {name!r}.", details={"name": name})
    return found


def template_list(*, tenant_id: UUID | str) -> list[PromptTemplate]:
    with tenant_atomic(tenant_id):
        return list(PromptTemplate.objects.select_related("example_set").order_by("name"))


TEMPLATE_FIELDS = ("template", "system", "defaults", "example_set", "max_examples", "description")


def _template_apply(template: PromptTemplate, values: dict[str, Any]) -> None:
    """Sets the given fields on the row and checks the whole: placeholders, defaults, examples."""
    if "template" in values:
        template.template = _text(values["template"], "template")
    if "system" in values:
        template.system = _text(values["system"], "system")
    if "description" in values:
        template.description = _text(values["description"], "description", limit=5000)
    if "defaults" in values:
        try:
            template.defaults = values_check(values["defaults"], field="defaults")
        except TemplateInvalid as exc:
            raise _invalid(exc) from None
    if "max_examples" in values:
        template.max_examples = _max_examples(values["max_examples"])
    if "example_set" in values:
        name = values["example_set"]
        if name in (None, ""):
            template.example_set = None
        else:
            example_set = ExampleSet.objects.filter(name=name).first() if isinstance(name, str) else None
            if example_set is None:
                raise ValidationFailed(f"example_set: no example set named {name!r}", details={"field": "example_set"})
            template.example_set = example_set
    shape = Template(template=template.template, system=template.system, defaults=template.defaults)
    try:
        shape.check()
        if template.example_set is not None:
            shape.examples_check(template.example_set.examples, field="example_set.examples")
        template.variables = shape.variables
    except TemplateInvalid as exc:
        raise _invalid(exc) from None


def template_create(*, tenant_id: UUID | str, by: Any, name: Any, values: dict[str, Any]) -> PromptTemplate:
    """A new template from `values` (TEMPLATE_FIELDS; any other key is refused by name)."""
    name = _name_checked(name)
    unknown = sorted(set(values) - set(TEMPLATE_FIELDS))
    if unknown:
        raise ValidationFailed(f"{unknown[0]}: not a template field", details={"field": unknown[0]})
    if values.get("template") is None:
        raise ValidationFailed("template: required, the text with {{ variable }} placeholders", details={"field": "template"})
    with tenant_atomic(tenant_id):
        template = PromptTemplate(tenant_id=tenant_id, name=name, created_by=actor_user(by))
        _template_apply(template, values)
        try:
            with transaction.atomic():
                template.save()
        except IntegrityError:
            raise Conflict(f"name: a prompt template named {name!r} exists already", details={"field": "name"}) from None
        audit_record(tenant_id=tenant_id, action="generation.template_created", user=actor_user(by),
                     api_key=actor_api_key(by), target=template, data={"name": name, "variables": template.variables})
    return template


def template_update(*, tenant_id: UUID | str, by: Any, name: str, changes: dict[str, Any]) -> PromptTemplate:
    unknown = sorted(set(changes) - set(TEMPLATE_FIELDS))
    if unknown:
        raise ValidationFailed(f"{unknown[0]}: not a field that can be changed ({', '.join(TEMPLATE_FIELDS)})",
                               details={"field": unknown[0]})
    with tenant_atomic(tenant_id):
        template = PromptTemplate.objects.select_for_update().filter(name=name).first()
        if template is None:
            raise NotFound(f"No prompt template named {name!r}.", details={"name": name})
        _template_apply(template, changes)
        template.version += 1
        template.updated_at = timezone.now()
        template.save()
        audit_record(tenant_id=tenant_id, action="generation.template_updated", user=actor_user(by),
                     api_key=actor_api_key(by), target=template, data={"name": name, "version": template.version})
    return template


def template_delete(*, tenant_id: UUID | str, by: Any, name: str) -> None:
    with tenant_atomic(tenant_id):
        template = PromptTemplate.objects.select_for_update().filter(name=name).first()
        if template is None:
            raise NotFound(f"No prompt template named {name!r}.", details={"name": name})
        audit_record(tenant_id=tenant_id, action="generation.template_deleted", user=actor_user(by),
                     api_key=actor_api_key(by), target=template, data={"name": name})
        template.delete()


# --- A request's template -------------------------------------------------------------------------


@dataclass
class TemplateUse:
    """A stored template ready to render: its shape, examples and version."""

    name: str
    version: int
    shape: Template
    examples: list[dict[str, Any]]
    max_examples: int | None

    def render(self, values: dict[str, str], *, field: str = "template") -> Rendered:
        try:
            return render(self.shape, values, examples=self.examples, max_examples=self.max_examples)
        except TemplateInvalid as exc:
            raise _invalid(exc, prefix=f"{field}.") from None


def template_use(*, tenant_id: UUID | str, spec: Any, field: str = "template") -> tuple[TemplateUse, dict[str, str]]:
    """A request's `template`: its name, or {"name", "variables", "example_set", "max_examples"}
    (example_set and max_examples override the template's own). Returns the template to render
    and the request's checked values."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValidationFailed(f"{field}: a template name, or {{name, variables, example_set, max_examples}}",
                               details={"field": field})
    unknown = sorted(set(spec) - {"name", "variables", "example_set", "max_examples"})
    if unknown:
        raise ValidationFailed(f"{field}.{unknown[0]}: not a template option (name, variables, example_set, max_examples)",
                               details={"field": f"{field}.{unknown[0]}"})
    try:
        stored = template_get(tenant_id=tenant_id, name=spec["name"])
    except NotFound:
        raise ValidationFailed(f"{field}.name: no prompt template named {spec['name']!r}",
                               details={"field": f"{field}.name"}) from None
    try:
        values = values_check(spec.get("variables"), field="variables")
    except TemplateInvalid as exc:
        raise _invalid(exc, prefix=f"{field}.") from None
    examples = stored.example_set.examples if stored.example_set else []
    if spec.get("example_set") is not None:
        try:
            examples = example_set_get(tenant_id=tenant_id, name=spec["example_set"]).examples
        except (NotFound, TypeError):
            raise ValidationFailed(f"{field}.example_set: no example set named {spec['example_set']!r}",
                                   details={"field": f"{field}.example_set"}) from None
    max_examples = _max_examples(spec.get("max_examples"), f"{field}.max_examples")
    use = TemplateUse(name=stored.name, version=stored.version,
                      shape=Template(template=stored.template, system=stored.system, defaults=stored.defaults),
                      examples=examples, max_examples=max_examples if max_examples is not None else stored.max_examples)
    return use, values
