"""Turning an executed notebook into artifacts a reviewer can read: masked, and as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter

from . import secrets


def _mask_output(output: dict[str, Any]) -> None:
    if "text" in output:
        output["text"] = secrets.mask(_as_text(output["text"]))
    if "traceback" in output:
        output["traceback"] = [secrets.mask(line) for line in output["traceback"]]
    if "evalue" in output:
        output["evalue"] = secrets.mask(output["evalue"])
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json") or mime.endswith("+xml"):
            if isinstance(value, (str, list)):
                output["data"][mime] = secrets.mask(_as_text(value))
            else:
                output["data"][mime] = secrets.mask_data(value)


def _as_text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def mask_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Mask every known secret in sources and outputs (images carry no text to mask)."""
    for cell in nb.cells:
        cell.source = secrets.mask(cell.source)
        for output in cell.get("outputs", []):
            _mask_output(output)
    return nb


def to_html(nb: nbformat.NotebookNode) -> str:
    """Render for reviewers: input code hidden, markdown and outputs kept."""
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    return secrets.mask(body)


def write_artifacts(executed: Path, notebook_out: Path, html_out: Path) -> None:
    """Mask the executed notebook into the artifact directory and render its HTML."""
    nb = mask_notebook(nbformat.read(executed, as_version=4))
    nbformat.write(nb, notebook_out)
    html_out.write_text(to_html(nb))
