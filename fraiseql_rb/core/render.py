"""Turning an executed notebook into artifacts a reviewer can read: masked, and as HTML."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter

from fraiseql_rb.core import report, secrets


def mask_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Mask every known secret anywhere in the document: sources, outputs and metadata
    (papermill keeps the parameters in `metadata.papermill.parameters`). nbformat.read
    has already joined multi-line strings, so a secret split across lines is whole here."""
    return nbformat.from_dict(secrets.mask_data(nb))


def with_header(nb: nbformat.NotebookNode, findings: dict[str, Any]) -> nbformat.NotebookNode:
    """A copy of `nb` for the HTML only: its `<title>` (runbook, target, incident, date) and
    the report header (report.header_html) as an output before the first cell. The
    notebook itself is left as it is."""
    page = copy.deepcopy(nb)
    page.metadata["title"] = report.page_title(findings)
    # An output, not a raw cell: nbconvert passes outputs through as they are, while it
    # strips the styles from raw HTML cells. The input (empty) is hidden like every input.
    header = nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/html": report.header_html(findings),
                              "text/plain": "\n".join(report.terminal_summary(findings))})])
    page.cells.insert(0, header)
    return page


def to_html(nb: nbformat.NotebookNode, findings: dict[str, Any] | None = None) -> str:
    """Render for reviewers: input code hidden, markdown and outputs kept; with the run's
    findings.json dict, a real `<title>` and the report header at the top of the page."""
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    if findings is not None:
        nb = with_header(nb, findings)
    body, _ = exporter.from_notebook_node(nb)
    return secrets.mask(body)


def write_artifacts(executed: Path, notebook_out: Path, html_out: Path,
                    findings: dict[str, Any] | None = None) -> None:
    """Mask the executed notebook into the artifact directory and render its HTML; the
    final findings.json dict, when given, makes the HTML's title and header."""
    nb = mask_notebook(nbformat.read(executed, as_version=4))
    nbformat.write(nb, notebook_out)
    html_out.write_text(to_html(nb, findings))
