"""The spec's keys as people read them, generated from the pydantic spec itself (r1deploy/spec.py):
the reference in docs/spec.md (`r1deploy docs`) and the commented key list `r1deploy init` writes
into an operator's group data. Each key's text is the comment above its field in spec.py, so the
reference cannot drift from the code."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from r1deploy.spec import Spec

_FIELD = re.compile(r"^    (\w+)\s*:")


@dataclass(frozen=True)
class Key:
    section: str
    name: str  # the flat inventory key, e.g. vllm_port
    type: str
    default: str | None  # Python source of the default; None: the operator must set it
    note: str  # the comment above the field in spec.py


def _notes(cls: type) -> dict[str, str]:
    """Each field's comment: the `#` lines right above it in the class body (its own, or a mixin's:
    r1deploy/spec_pd.py's keys are fields of spec.py's sections)."""
    notes: dict[str, str] = {}
    for base in cls.__mro__[::-1]:
        if issubclass(base, BaseModel) and base.__module__.startswith("r1deploy."):
            notes.update(_class_notes(base))
    return notes


def _class_notes(cls: type) -> dict[str, str]:
    notes: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        m = _FIELD.match(line)
        if m:
            notes[m.group(1)] = " ".join(pending)
        pending = []
    return notes


def _type(annotation: Any) -> str:
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return text.replace("typing.", "")


def _default(info) -> str | None:
    if info.default_factory is not None:
        return repr(info.default_factory())
    return None if info.default is PydanticUndefined else repr(info.default)


def keys() -> list[tuple[str, str, list[Key]]]:
    """(section, its docstring, its keys) in the spec's order."""
    out = []
    for section, info in Spec.model_fields.items():
        cls = info.annotation
        notes = _notes(cls)
        own = cls.__dict__.get("__annotations__", {})  # the section's own keys first, then its mixins'
        fields = sorted(cls.model_fields.items(), key=lambda item: item[0] not in own)
        out.append((section, inspect.cleandoc(cls.__doc__ or ""), [
            Key(section, f"{section}_{name}", _type(f.annotation), _default(f), notes.get(name, ""))
            for name, f in fields]))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    lines = ["# Spec reference", "",
             "Generated from `r1deploy/spec.py` by `r1deploy docs` (tests/test_package.py fails when it",
             "is stale). Every key is flat host or group data (`vllm_port = 8000` in group_data/*.py);",
             "its prefix names its section. *required*: no default, the inventory must set it.", ""]
    for section, doc, ks in keys():
        lines += [f"## `{section}_*`", "", doc, "", "| key | type | default | notes |", "|---|---|---|---|"]
        for k in ks:
            default = "*required*" if k.default is None else f"`{_cell(k.default)}`"
            lines.append(f"| `{k.name}` | `{_cell(k.type)}` | {default} | {_cell(k.note)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def group_data_keys() -> str:
    """Every key, commented out, for an operator's group_data/all.py: the required ones first."""
    lines = ["# Every key of the spec (r1deploy docs: the reference). Uncomment what you set.",
             "# Required (no default):"]
    every = [k for _, _, ks in keys() for k in ks]
    lines += [f"# {k.name} = ...  # {k.type}" for k in every if k.default is None]
    for section, _, ks in keys():
        lines.append(f"# --- {section}_*")
        lines += [f"# {k.name} = {k.default}" for k in ks if k.default is not None]
    return "\n".join(lines) + "\n"
