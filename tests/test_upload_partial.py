"""An upload of several files whose event publishing breaks part-way: the client
learns which files were queued, and the rest leave nothing behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from imgpipe.broker.protocol import Broker
from imgpipe.client.api import ApiError, Client
from imgpipe.errors import TransientError
from imgpipe.runtime.fileurl import embedded_url
from imgpipe.upload.app import create_app
from imgpipe.upload.context import Backends
from imgpipe.upload.service import connect_backends, new_backends
from imgpipe.upload.settings import UploadSettings
from tests.images import image_bytes


class BrokerThatFails:
    """The real (embedded) broker, with the broker going away after ``ok`` publishes."""

    def __init__(self, inner: Broker, ok: int) -> None:
        self._inner = inner
        self._ok = ok

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        if self._ok == 0:
            raise TransientError("RabbitMQ is unavailable: ConnectionResetError",
                                 reason="broker_unavailable")
        self._ok -= 1
        await self._inner.publish(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
async def backends(tmp_path: Path) -> AsyncIterator[tuple[UploadSettings, Backends]]:
    settings = UploadSettings(amqp_url=embedded_url(tmp_path / "broker"),
                              s3_url=embedded_url(tmp_path / "objects"),
                              couchdb_url=embedded_url(tmp_path / "provenance"))
    real = new_backends(settings)
    broker, store, provenance = real.broker, real.store, real.provenance
    await connect_backends(settings, real)
    # each file costs two publishes (its job event, then its 'received' record)
    failing = Backends(broker=BrokerThatFails(broker, ok=2), store=store,  # type: ignore[arg-type]
                       provenance=provenance)
    yield settings, failing
    await broker.close()
    await store.close()
    await provenance.close()


async def test_partial_failure_names_the_queued_jobs(
    backends: tuple[UploadSettings, Backends],
) -> None:
    settings, parts = backends
    files = [(f"f{i}.png", image_bytes(40 + i, 30, ".png")) for i in range(3)]
    async with TestServer(create_app(settings, parts)) as server, \
            Client(str(server.make_url(""))) as client:
        with pytest.raises(ApiError) as refused:
            await client.upload_files(files)
    assert (refused.value.status, refused.value.reason) == (503, "broker_unavailable")
    [queued] = refused.value.details["queued_jobs"]
    assert queued["filename"] == "f0.png" and queued["status"] == "queued"
    stored = await parts.store.list_keys(settings.s3_input_bucket)
    assert len(stored) == 1 and queued["job_id"] in stored[0]
