"""``imgpipe submit``: upload files, optionally wait and download the outputs.

A file the service already has a job for (same content, same pipelines, not
failed: :mod:`imgpipe.client.done`) is not uploaded again unless ``again``;
it is listed with that job, which ``--wait``/``--out`` wait for and download.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from imgpipe.client.api import ApiError, Client
from imgpipe.client.done import already_done, canonical_pipelines
from imgpipe.client.show import describe_output, status_text

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".avif", ".heic", ".heif"}
)
EXTENSIONS = {"jpeg": "jpg", "tiff": "tif"}
KEEP_FINISHED_BARS = 20
"""With more files than this, a file's bar goes away once it is uploaded."""


class UsageError(Exception):
    """The command line names something that cannot be submitted."""


@dataclass
class Item:
    """One file on its way: upload, job, outputs saved."""

    path: Path
    size: int
    job: dict[str, Any] | None = None
    view: dict[str, Any] | None = None
    error: tuple[str, str] | None = None
    skipped: bool = False
    saved: list[Path] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.error and not self.view:
            return "refused" if self.job is None else "failed"
        if self.view:
            return str(self.view["status"])
        return "queued" if self.job else "not sent"


def collect_files(paths: list[Path], glob: str | None = None) -> list[Path]:
    """The files named, and the images found under the directories named (recursively).

    With ``glob`` (``**/*.tif``, ``2024-*/*.png``), only the files under a directory
    that match it, relative to that directory; hidden files and directories never.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.glob(glob) if glob else path.rglob("*")):
                hidden = any(p.startswith(".") for p in child.relative_to(path).parts)
                wanted = glob is not None or child.suffix.lower() in IMAGE_SUFFIXES
                if child.is_file() and not hidden and wanted:
                    found.append(child)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UsageError("no images found in " + ", ".join(str(p) for p in paths))
    return unique


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}", justify="left"), BarColumn(), TaskProgressColumn(),
        DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=console, disable=not console.is_terminal, transient=False,
    )


async def _upload_all(
    client: Client, items: list[Item], pipeline: str | None, parallel: int, console: Console
) -> None:
    limit = asyncio.Semaphore(parallel)
    with _progress(console) as progress:
        overall = progress.add_task("[bold]all files", total=sum(i.size for i in items) or 1)

        keep_finished = len(items) <= KEEP_FINISHED_BARS

        async def one(item: Item) -> None:
            task = progress.add_task(item.path.name, total=item.size or 1, visible=False)

            def advance(n: int) -> None:
                progress.advance(task, n)
                progress.advance(overall, n)

            async with limit:
                progress.update(task, visible=True)
                try:
                    item.job = await client.upload(item.path, pipeline=pipeline, progress=advance)
                except ApiError as exc:
                    item.error = (exc.reason, exc.message)
                    progress.update(task, description=f"[red]{item.path.name} (refused)")
                except OSError as exc:
                    item.error = ("unreadable", f"{item.path}: {exc.strerror or exc}")
                if not keep_finished and not item.error:
                    progress.update(task, visible=False)

        await asyncio.gather(*(one(item) for item in items))


async def _wait_all(
    client: Client, items: list[Item], timeout: float, console: Console
) -> None:
    queued = [i for i in items if i.job]
    if not queued:
        return
    by_id = {str(i.job["job_id"]): i for i in queued if i.job}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("[bold]processing", total=len(by_id))

        def update(views: dict[str, dict[str, Any]]) -> None:
            finished = sum(1 for v in views.values() if v["status"] in ("done", "failed"))
            progress.update(task, completed=finished)

        try:
            views = await client.wait(list(by_id), timeout=timeout, on_update=update)
        except TimeoutError:
            views = await client.jobs(list(by_id))
            for job_id, item in by_id.items():
                if views.get(job_id, {}).get("status") not in ("done", "failed"):
                    item.error = ("timeout", f"not finished after {timeout:g} s")
    for job_id, item in by_id.items():
        item.view = views.get(job_id)
        if item.view and item.view["status"] == "failed":
            err = item.view.get("error") or {}
            item.error = (str(err.get("reason", "failed")), str(err.get("message", "")))


def _target(out: Path, item: Item, index: int, count: int, fmt: str, used: set[Path]) -> Path:
    stem = item.path.stem + (f"-{index}" if count > 1 else "")
    ext = EXTENSIONS.get(fmt, fmt or "bin")
    target = out / f"{stem}.{ext}"
    if target in used and item.job:
        target = out / f"{stem}-{str(item.job['job_id'])[:8]}.{ext}"
    used.add(target)
    return target


async def _download_all(client: Client, items: list[Item], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    used: set[Path] = set()
    for item in items:
        if not item.view or item.view["status"] != "done":
            continue
        outputs = item.view["outputs"]
        for index, output in enumerate(outputs):
            target = _target(out, item, index, len(outputs), output.get("format") or "", used)
            try:
                await client.download(output["url"], target, sha256=output.get("sha256"))
            except ApiError as exc:
                item.error = (exc.reason, exc.message)
                continue
            item.saved.append(target)


def _summary(items: list[Item], console: Console) -> None:
    table = Table(title="imgpipe submit", show_lines=False)
    for column in ("File", "Job", "Status", "Result"):
        table.add_column(column, overflow="fold")
    for item in items:
        job_id = str(item.job["job_id"]) if item.job else "-"
        if item.error:
            result = f"[red]{item.error[0]}[/red]: {item.error[1]}"
        elif item.view and item.view["outputs"]:
            parts = [describe_output(o) for o in item.view["outputs"]]
            if item.saved:
                parts = [f"{p} → {s}" for p, s in zip(parts, item.saved, strict=False)]
            result = "\n".join(parts)
        else:
            result = f"imgpipe jobs {job_id}" if item.job else ""
        status = status_text(item.status) + (" (skipped)" if item.skipped else "")
        table.add_row(str(item.path), job_id, status, result)
    console.print(table)


async def _skip_done(client: Client, items: list[Item], canonical: list[str],
                     parallel: int) -> None:
    """Mark the items the service already has a job for, with that job."""
    pipelines = canonical or await canonical_pipelines(client, None)
    found = await already_done(client, [i.path for i in items], pipelines, parallel=parallel)
    for item in items:
        view = found.get(item.path)
        if view is not None:
            item.skipped, item.job, item.view = True, {"job_id": view["job_id"]}, view


async def submit(
    paths: list[Path], *, url: str, pipeline: str | None, wait: bool, out: Path | None,
    timeout: float, parallel: int, console: Console, token: str | None = None,
    glob: str | None = None, again: bool = False,
) -> int:
    """Run ``imgpipe submit``; the exit status: 0 all good, 1 a file failed, 2 unusable input."""
    try:
        files = collect_files(paths, glob)
    except UsageError as exc:
        console.print(f"[red]imgpipe submit:[/red] {exc}")
        return 2
    items = [Item(path=p, size=p.stat().st_size) for p in files]
    async with Client(url, token=token) as client:
        canonical: list[str] = []
        if pipeline:
            try:
                checked = await client.validate(pipeline)
            except ApiError as exc:
                if exc.status is None or exc.status == 401:
                    console.print(f"[red]imgpipe submit: {exc.reason}:[/red] {exc.message}")
                    return 1
                console.print(f"[red]imgpipe submit: pipeline refused ({exc.reason}):[/red] "
                              f"{exc.message}")
                return 2
            console.print(f"pipeline: {checked['canonical']}")
            canonical = [str(checked["canonical"])]
        if not again:
            try:
                await _skip_done(client, items, canonical, parallel)
            except ApiError as exc:
                console.print(f"[red]imgpipe submit: could not ask what is already done "
                              f"({exc.reason}):[/red] {exc.message} (--again uploads regardless)")
                return 1
        todo = [i for i in items if not i.skipped]
        await _upload_all(client, todo, pipeline, parallel, console)
        uploaded = sum(1 for i in todo if i.job)
        skipped = len(items) - len(todo)
        console.print(f"{uploaded} uploaded, {skipped} skipped"
                      + (" (already submitted; --again uploads them anyway)" if skipped else ""))
        if wait or out is not None:
            await _wait_all(client, items, timeout, console)
            if out is not None:
                await _download_all(client, items, out)
    _summary(items, console)
    failed = [i for i in items if i.error]
    for item in failed:
        assert item.error is not None
        console.print(f"[red]failed[/red] {item.path}: {item.error[0]}: {item.error[1]}")
    return 1 if failed else 0
