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
        doc = " ".join((cls.__doc__ or "").split(". ")[0].split())
        rows.append([name, cls.input_kind, doc])
    table(["name", "input", "description"], rows, title="models")
    prow = []
    for p in presets.presets():
        model, cfg = presets.resolve(p)
        prow.append([p, model, ", ".join(f"{k}={v}" for k, v in cfg.items())])
    table(["name", "model", "config"], prow, title="presets (sciml train PRESET ...)")


def register(app: typer.Typer) -> None:
    app.command("models")(models)
