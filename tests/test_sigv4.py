"""Presigned S3 URLs signed by imgpipe are botocore's, character for character.

The URLs themselves are used against SeaweedFS by tests/test_imageproc_objects.py
and the end-to-end tests; here the signer is compared with botocore's
``generate_presigned_url`` at a fixed time, for keys and headers of every kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import botocore.auth
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from imgpipe.runtime.config import S3Settings
from imgpipe.storage.s3 import S3Store
from imgpipe.storage.sigv4 import Presigner

NOW = datetime(2026, 11, 30, 7, 50, 23, tzinfo=UTC)
ENDPOINTS = ["http://127.0.0.1:8333", "https://s3.example.org", "http://localhost:80/",
             "https://[::1]:9000"]


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda: NOW.replace(tzinfo=None))


def botocore_url(endpoint: str, method: str, params: dict[str, Any], expires: int) -> str:
    async def sign() -> str:
        config = AioConfig(s3={"addressing_style": "path"}, signature_version="s3v4")
        async with get_session().create_client(
                "s3", endpoint_url=endpoint, region_name="eu-west-3", aws_access_key_id="AK/1+x",
                aws_secret_access_key="secret/key", config=config) as client:
            return str(await client.generate_presigned_url(method, Params=params,
                                                           ExpiresIn=expires))
    return asyncio.run(sign())


def ours(endpoint: str) -> Presigner:
    signer = Presigner.of(endpoint, "eu-west-3", "AK/1+x", "secret/key")
    assert signer is not None
    return signer


KEYS = ["uploads/0123abcd", "jobs/j/thumbnailed/0123456789abcdef.jpg", "a b+c/é~x%y=z&q?#",
        "dir//double/./dot/../x", "-_.!*'()[]{}$@,;:", "日本/語"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("key", KEYS)
def test_get_and_put_urls_are_botocores(endpoint: str, key: str) -> None:
    assert ours(endpoint).url("GET", "bucket-1", key, expires=120, now=NOW) == botocore_url(
        endpoint, "get_object", {"Bucket": "bucket-1", "Key": key}, 120)
    meta = {"job-id": "0" * 32, "stage": "thumb  nailed ", "input-sha256": "ab" * 32}
    headers = {"Content-Type": "image/jpeg"} | {f"x-amz-meta-{k}": v for k, v in meta.items()}
    assert ours(endpoint).url("PUT", "bucket-1", key, expires=3600, headers=headers,
                              now=NOW) == botocore_url(
        endpoint, "put_object",
        {"Bucket": "bucket-1", "Key": key, "ContentType": "image/jpeg", "Metadata": meta}, 3600)


@settings(max_examples=60, deadline=None)
@given(key=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                   min_size=1, max_size=30),
       meta=st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
                            st.text(st.characters(codec="ascii", exclude_categories=["Cc"]),
                                    max_size=12), max_size=3))
def test_any_key_and_metadata(key: str, meta: dict[str, str]) -> None:
    headers = {"Content-Type": "image/png"} | {f"x-amz-meta-{k}": v for k, v in meta.items()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
        expected = botocore_url(ENDPOINTS[0], "put_object", {
            "Bucket": "b-2", "Key": key, "ContentType": "image/png", "Metadata": meta}, 61)
    assert ours(ENDPOINTS[0]).url("PUT", "b-2", key, expires=61, headers=headers,
                                  now=NOW) == expected


def test_what_it_does_not_sign_goes_to_botocore() -> None:
    assert Presigner.of("http://127.0.0.1:8333/prefix", "r", "a", "s") is None
    assert Presigner.of("http://user:pw@127.0.0.1:8333", "r", "a", "s") is None
    signer = ours(ENDPOINTS[0])
    assert signer.url("PUT", "b", "k", expires=1, headers={"x-amz-meta-name": "é"}) is None
    assert signer.url("PUT", "b", "k", expires=1, headers={"A": "1", "a": "2"}) is None

    async def store_urls() -> Iterator[str]:
        store = S3Store(S3Settings(s3_url="http://127.0.0.1:8333/prefix", s3_region="eu-west-3",
                                   s3_access_key="AK/1+x", s3_secret_key=SecretStr("secret/key")))
        try:
            put = await store.presign_put("bucket-1", "k", content_type="image/png",
                                          metadata={"name": "x"})
            assert put is not None
            return iter([str(await store.presign_get("bucket-1", "k")), put.url])
        finally:
            await store.close()
    get_url, put_url = asyncio.run(store_urls())
    assert get_url.startswith("http://127.0.0.1:8333/prefix/bucket-1/k?")
    assert "X-Amz-Signature=" in put_url
