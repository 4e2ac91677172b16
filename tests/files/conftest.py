"""Fixtures of the files tests: a private local folder per test, small chunks, and a real
S3-protocol server (moto in server mode) on 127.0.0.1 for the S3 backend."""

import os
import socket

import pytest

from tests.helpers import client_for

MIB = 1024 * 1024
# The S3 server's port: FILES_TEST_S3_PORT, else a free one (moto's own, not a mock of boto3).
S3_PORT = int(os.environ.get("FILES_TEST_S3_PORT", "0"))


@pytest.fixture(autouse=True)
def local_files(settings, tmp_path):
    """Every files test stores under its own folder, with 1 KiB chunks (many chunks, few bytes)."""
    settings.FILES_STORAGE = "local"
    settings.FILES_LOCAL_ROOT = tmp_path / "files"
    settings.FILES_CHUNK_BYTES = 1024
    return settings.FILES_LOCAL_ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = S3_PORT or _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_files(settings, s3_server):
    """The S3 backend against the moto server: a fresh bucket, 5 MiB parts (S3's minimum)."""
    import uuid

    import boto3

    bucket = f"files-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    settings.FILES_STORAGE = "s3"
    settings.FILES_S3_BUCKET = bucket
    settings.FILES_S3_ENDPOINT_URL = s3_server
    settings.FILES_S3_ACCESS_KEY_ID = "test"
    settings.FILES_S3_SECRET_ACCESS_KEY = "test"
    settings.FILES_S3_REGION = "us-east-1"
    settings.FILES_S3_PREFIX = "files/"
    settings.FILES_CHUNK_BYTES = 5 * MIB
    settings.FILES_S3_REDIRECT = False
    client.bucket = bucket
    return client


@pytest.fixture
def other_tenant_api(db):
    from tests.accounts.factories import TenantFactory, UserFactory

    return client_for(UserFactory(tenant=TenantFactory(), role="owner"))
