"""Prompt templates and few-shot examples, rendered without the database.

A template is text with `{{ variable }}` placeholders (names are identifiers), an optional system
prompt (which may use the same variables), defaults for some variables, and optionally a set of
examples: each example fills the template's variables and gives the output wanted. Rendered for a
chat model, every example becomes a user turn (the template filled with its values) followed by an
assistant turn (its output), and the request's own filling is the last user turn. For a completion
model the same turns are laid out as text, each example's output after its prompt.

Substitution is one pass: a value that itself contains `{{ x }}` stays as written, so what a user
types into a variable is never expanded as template text."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
MAX_TEMPLATE_CHARS = 32_000
MAX_VALUE_CHARS = 32_000
MAX_VARIABLES = 50
MAX_EXAMPLES = 100
EXAMPLE_SEPARATOR = "\n\n"


class TemplateInvalid(ValueError):
    """What is wrong, with the field it is wrong in (`field` as the API names it)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def template_variables(text: str, *, field: str = "template") -> list[str]:
    """The variables a template uses, in order of first use. A brace pair that is not a valid
    placeholder (`{{ 1x }}`, an unclosed `{{`) is refused rather than left in the prompt."""
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateInvalid(field, f"longer than {MAX_TEMPLATE_CHARS} characters")
    names: list[str] = []
    for match in VARIABLE.finditer(text):
        if match.group(1) not in names:
            names.append(match.group(1))
    leftover = VARIABLE.sub("", text)
    if "{{" in leftover or "}}" in leftover:
        position = min(index for index in (leftover.find("{{"), leftover.find("}}")) if index >= 0)
        raise TemplateInvalid(field, "a '{{' or '}}' that is not a {{ variable }} placeholder (variable names are "
                                     f"letters, digits and _, not starting with a digit), near {leftover[position:position + 20]!r}")
    if len(names) > MAX_VARIABLES:
        raise TemplateInvalid(field, f"more than {MAX_VARIABLES} variables")
    return names


def _render(text: str, values: dict[str, str]) -> str:
    return VARIABLE.sub(lambda match: values[match.group(1)], text)


def values_check(values: Any, *, field: str) -> dict[str, str]:
    """A filling of variables: names to text (numbers are written as text)."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise TemplateInvalid(field, "an object of variable names to values")
    clean = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TemplateInvalid(f"{field}.{name}", "text (or a number)")
        value = str(value)
        if len(value) > MAX_VALUE_CHARS:
            raise TemplateInvalid(f"{field}.{name}", f"longer than {MAX_VALUE_CHARS} characters")
        if "\x00" in value:
            raise TemplateInvalid(f"{field}.{name}", "contains a NUL character")
        clean[str(name)] = value
    return clean


def examples_check(examples: Any, *, field: str = "examples") -> list[dict[str, Any]]:
    """Few-shot examples: a list of {"variables": {...}, "output": "..."}."""
    if not isinstance(examples, list) or not examples:
        raise TemplateInvalid(field, "a non-empty list of {variables, output}")
    if len(examples) > MAX_EXAMPLES:
        raise TemplateInvalid(field, f"at most {MAX_EXAMPLES} examples")
    clean = []
    for index, example in enumerate(examples):
        where = f"{field}[{index}]"
        if not isinstance(example, dict) or set(example) - {"variables", "output"}:
            raise TemplateInvalid(where, "an object with variables and output")
        output = example.get("output")
        if not isinstance(output, str) or not output.strip():
            raise TemplateInvalid(f"{where}.output", "the output wanted, as text")
        if len(output) > MAX_VALUE_CHARS:
            raise TemplateInvalid(f"{where}.output", f"longer than {MAX_VALUE_CHARS} characters")
        clean.append({"variables": values_check(example.get("variables"), field=f"{where}.variables"), "output": output})
    return clean


@dataclass(frozen=True)
class Template:
    template: str
    system: str = ""
    defaults: dict[str, str] = field(default_factory=dict)

    @property
    def variables(self) -> list[str]:
        names = template_variables(self.system, field="system")
        return names + [name for name in template_variables(self.template) if name not in names]

    def check(self) -> None:
        """Refuses a template that cannot render: bad placeholders, defaults for variables it does
        not use, no text to render."""
        if not self.template.strip():
            raise TemplateInvalid("template", "the text to fill, with {{ variable }} placeholders")
        known = self.variables
        for name in self.defaults:
            if name not in known:
                raise TemplateInvalid(f"defaults.{name}", f"the template has no such variable ({_listed(known)})")

    def fill(self, values: dict[str, str], *, field: str = "variables") -> dict[str, str]:
        """The request's values over the defaults; refused when a value is missing or unknown."""
        known = self.variables
        for name in values:
            if name not in known:
                raise TemplateInvalid(f"{field}.{name}", f"the template has no such variable ({_listed(known)})")
        filled = {**self.defaults, **values}
        missing = [name for name in known if name not in filled]
        if missing:
            raise TemplateInvalid(f"{field}.{missing[0]}", f"missing; the template needs {_listed(missing)}")
        return filled

    def examples_check(self, examples: list[dict[str, Any]], *, field: str = "examples") -> None:
        """Examples name only the template's variables; those they leave out take the request's
        values (a tone or a product name shared by every turn)."""
        known = self.variables
        for index, example in enumerate(examples):
            for name in example["variables"]:
                if name not in known:
                    raise TemplateInvalid(f"{field}[{index}].variables.{name}",
                                          f"the template has no such variable ({_listed(known)})")


def _listed(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


@dataclass
class Rendered:
    system: str | None
    turns: list[tuple[str, str]]  # (user, assistant) for each example
    user: str

    def messages(self) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in self.turns:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return out + [{"role": "user", "content": self.user}]

    def prompt(self) -> str:
        parts = [self.system] if self.system else []
        parts += [f"{user}{assistant}" if user.endswith((" ", "\n")) else f"{user}\n{assistant}"
                  for user, assistant in self.turns]
        return EXAMPLE_SEPARATOR.join(parts + [self.user])


def render(template: Template, values: dict[str, str], *, examples: list[dict[str, Any]] | None = None,
           max_examples: int | None = None) -> Rendered:
    """The template filled with the request's values, after its examples (the first max_examples)."""
    filled = template.fill(values)
    chosen = (examples or [])[: max_examples if max_examples is not None else None]
    template.examples_check(chosen)
    turns = [(_render(template.template, {**filled, **example["variables"]}), example["output"]) for example in chosen]
    system = _render(template.system, filled).strip() if template.system else None
    return Rendered(system=system or None, turns=turns, user=_render(template.template, filled))
