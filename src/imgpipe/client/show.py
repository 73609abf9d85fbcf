"""``imgpipe jobs``: a job's status and outputs, printed for people."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imgpipe.client.api import ApiError, Client

COLOURS = {"done": "green", "failed": "red", "refused": "red", "processing": "yellow",
           "queued": "yellow"}


def status_text(status: str) -> str:
    colour = COLOURS.get(status, "white")
    return f"[{colour}]{status}[/{colour}]"


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.2f} MB"


def describe_output(output: dict[str, Any]) -> str:
    """``PNG 300×200 12.3 KB`` for one output of a job view."""
    fmt = str(output.get("format") or "?").upper()
    return f"{fmt} {output.get('width')}×{output.get('height')} {human_size(output.get('size'))}"


def print_job(view: dict[str, Any], console: Console, base_url: str) -> None:
    console.print(f"[bold]job {view['job_id']}[/bold]  {status_text(view['status'])}")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    source = view.get("input") or {}
    facts.add_row("file", escape(str(view.get("filename") or "-")))
    facts.add_row("pipelines", escape(", ".join(view.get("pipelines") or []) or "-"))
    if view.get("received_at"):
        facts.add_row("received", str(view["received_at"]))
    facts.add_row("input", f"{str(source.get('format') or '?').upper()} "
                           f"{human_size(source.get('size'))} sha256 {source.get('sha256') or '?'}")
    facts.add_row("provenance", base_url + str(view.get("provenance_url", "")))
    if view.get("error"):
        err = view["error"]
        facts.add_row("[red]error[/red]", escape(f"{err.get('reason')}: {err.get('message')}"))
    console.print(facts)
    if view.get("outputs"):
        table = Table(show_edge=False)
        for column in ("#", "stage", "pipeline", "output", "sha256", "url"):
            table.add_column(column, overflow="fold")
        for index, output in enumerate(view["outputs"]):
            table.add_row(str(index), str(output.get("stage")), escape(str(output.get("pipeline"))),
                          describe_output(output), str(output.get("sha256") or "")[:16],
                          base_url + str(output.get("url")))
        console.print(table)


async def show_jobs(
    job_ids: list[str], *, url: str, as_json: bool, console: Console, token: str | None = None
) -> int:
    """Print each job; exit status 1 when one is unknown or failed."""
    status = 0
    async with Client(url, token=token) as client:
        for job_id in job_ids:
            try:
                view = await client.job(job_id)
            except ApiError as exc:
                console.print(f"[red]{escape(job_id)}: {exc.reason}:[/red] {escape(exc.message)}")
                status = 1
                continue
            if as_json:
                console.print_json(json.dumps(view))
            else:
                print_job(view, console, client.base_url)
            if view["status"] == "failed":
                status = 1
    return status
