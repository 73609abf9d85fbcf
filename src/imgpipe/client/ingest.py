"""``imgpipe ingest s3://bucket/prefix``: ask the upload service to ingest, show progress.

The service does the work (it holds the S3 credentials and only ingests
buckets the deployment allows); this command sends ``POST /ingest`` and
shows the progress it streams back: counts, objects per second and bytes
per second. Ctrl-C stops the run; the same command resumes it.

Exit status: 0 when the run finished with no object failing, 1 when some
failed (run again to retry them), 2 when the request was refused, 130 when
stopped.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from imgpipe.client.api import ApiError, Client, raise_for
from imgpipe.client.show import human_size

STOPPED = 130


def _rate(count: float, seconds: float) -> str:
    return f"{count / seconds:.1f}/s" if seconds > 0 else "-"


def progress_table(state: dict[str, Any]) -> Table:
    """One line of counts and rates for a progress object of ``POST /ingest``."""
    elapsed = float(state.get("elapsed") or 0)
    table = Table(show_edge=False, box=None, padding=(0, 2))
    for column in ("listed", "queued", "skipped", "refused", "failed", "read", "rate", "time"):
        table.add_column(column, justify="right")
    handled = sum(int(state.get(k) or 0) for k in ("queued", "skipped", "refused", "failed"))
    bytes_read = int(state.get("bytes_read") or 0)
    table.add_row(str(state.get("listed", 0)), f"[green]{state.get('queued', 0)}[/green]",
                  str(state.get("skipped", 0)), f"[yellow]{state.get('refused', 0)}[/yellow]",
                  f"[red]{state.get('failed', 0)}[/red]", human_size(bytes_read),
                  f"{_rate(handled, elapsed)} · {human_size(int(bytes_read / elapsed)) if elapsed else '-'}/s",
                  f"{elapsed:.0f} s")
    return table


async def ingest(
    source: str, *, url: str, pipelines: list[str], restart: bool, console: Console,
    token: str | None = None,
) -> int:
    body: dict[str, Any] = {"source": source, "pipelines": pipelines, "restart": restart}
    last: dict[str, Any] = {}
    async with Client(url, token=token, timeout=0) as client:
        try:
            async with client.session.post(f"{client.base_url}/ingest", json=body) as resp:
                await raise_for(resp)
                with Live(console=console, transient=False, auto_refresh=False) as live:
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        last = json.loads(line)
                        if "error" not in last:
                            live.update(progress_table(last), refresh=True)
        except ApiError as exc:
            console.print(f"[red]imgpipe ingest: {escape(exc.reason)}:[/red] {escape(exc.message)}")
            return 2
        except aiohttp.ClientError as exc:
            console.print(f"[red]imgpipe ingest: {escape(url)}: {escape(str(exc))}[/red]")
            return 2
    for error in last.get("errors") or []:
        console.print(f"  {escape(error['outcome'])} {escape(error['key'])}: "
                      f"{escape(error['reason'])} {escape(error.get('message', ''))}")
    if "error" in last:
        error = last["error"]
        console.print(f"[red]stopped: {escape(error['reason'])}: {escape(error['message'])}[/red]"
                      " — run the same command again to resume")
        return 1
    if not last.get("done"):
        console.print("stopped — run the same command again to resume")
        return STOPPED
    return 1 if last.get("failed") else 0
