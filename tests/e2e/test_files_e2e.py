"""Files over a real daphne: chunks larger than Django's 2.5 MB body limit go through, and
a download to a slow client does not pile up in the server's memory (flow control,
config/api/backpressure.py)."""

import hashlib
import random
import threading
import time

import httpx
import pytest

from tests.e2e.conftest import register

pytestmark = [pytest.mark.realstack, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
SIZE = 48 * MIB


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_upload_then_slow_download_keeps_server_memory_flat(stack, tmp_path):
    stack.env.update(FILES_LOCAL_ROOT=str(tmp_path / "files"), FILES_CHUNK_BYTES=str(8 * MIB))
    daphne = stack.start_daphne()
    account = register(stack)
    data = random.Random(13).randbytes(SIZE)
    client = httpx.Client(base_url=stack.base_url, headers=account["headers"], timeout=60, trust_env=False)
    file = client.post(
        "/api/v1/files/",
        json={"filename": "big.bin", "size": SIZE, "content_type": "application/octet-stream",
              "sha256": hashlib.sha256(data).hexdigest()},
    ).json()  # fmt: skip
    for index in range(file["chunk_count"]):
        put = client.put(
            f"/api/v1/files/{file['id']}/chunks/{index}", content=data[index * 8 * MIB : (index + 1) * 8 * MIB]
        )
        assert put.status_code == 201, put.text
    assert client.post(f"/api/v1/files/{file['id']}/complete").json()["status"] == "ready"
    time.sleep(0.5)
    baseline = _rss_mib(daphne.pid)
    peak = [baseline]
    sampling = True

    def sample():
        while sampling:
            peak[0] = max(peak[0], _rss_mib(daphne.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    received = hashlib.sha256()
    with client.stream("GET", f"/api/v1/files/{file['id']}/content") as response:
        status = response.status_code
        for piece in response.iter_raw(256 * 1024):
            received.update(piece)
            time.sleep(0.01)  # a slow client: ~25 MiB/s at most
    sampling = False
    sampler.join()

    assert status == 200
    assert received.hexdigest() == hashlib.sha256(data).hexdigest()
    assert peak[0] - baseline < 24, f"server grew {peak[0] - baseline:.1f} MiB while streaming {SIZE // MIB} MiB"
