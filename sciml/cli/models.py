"""``sciml models``: list the registered models and the named presets."""

from __future__ import annotations

import typer


def models() -> None:
    """List registered models (with their input kind) and named presets."""
    from .. import operators
    from ..operators import presets
    from ._common import table

    rows = []
    for name in operators.available():
        cls = operators.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        rows.append([name, cls.input_kind, doc])
    table(["name", "input", "description"], rows, title="models")
    prow = [[p, *presets.resolve(p)[:1], presets.describe(p)] for p in presets.presets()]
    table(["name", "model", "description"], prow, title="presets")


def register(app: typer.Typer) -> None:
    app.command("models")(models)
