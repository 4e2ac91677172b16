"""Files: a large upload and download through a real server, with its memory.

    .venv/bin/python bench/files_transfer.py [--size-mib 1024] [--chunk-mib 8] [--port 18610]

Starts daphne (config.asgi) on 127.0.0.1:PORT against DATABASE_URL / REDIS_URL (the
database must be migrated), with the local files backend in a temporary folder. Creates a
tenant (enterprise tier: 600 requests a minute) and a user, then:

1. declares a file of SIZE bytes generated on the fly (never held whole: chunk ``i`` is
   ``random.Random(i).randbytes``), PUTs its chunks one after another and completes it
   (the server reads it back to check sha256);
2. downloads it streamed and checks its sha256.

It samples the server process's RSS (/proc/PID/status VmRSS) every 20 ms and prints the
throughput of each phase and the peak RSS growth over the warmed-up baseline. Prints
figures; asserts only that the bytes came back intact.
"""

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")

import django  # noqa: E402

django.setup()

import logging  # noqa: E402

logging.getLogger("httpx").setLevel(logging.WARNING)

MIB = 1024 * 1024


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self):
        while self.running:
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return
            time.sleep(0.02)

    def reset(self):
        self.peak = rss_kib(self.pid)


def chunk_bytes(index: int, size: int, total: int, chunk: int) -> bytes:
    return random.Random(index).randbytes(min(chunk, total - index * chunk))


def make_user():
    from accounts.models import Tenant
    from accounts.services import tokens_for
    from tests.accounts.factories import TenantFactory, UserFactory

    tag = os.urandom(4).hex()
    tenant = TenantFactory(tier=Tenant.Tier.ENTERPRISE, slug=f"bench-files-{tag}")
    user = UserFactory(tenant=tenant, role="owner", email=f"bench-files-{tag}@example.com")
    return tokens_for(user).access


def transfer(client: httpx.Client, total: int, chunk: int, sampler=None) -> dict:
    digest = hashlib.sha256()
    count = -(-total // chunk)
    for index in range(count):
        digest.update(chunk_bytes(index, chunk, total, chunk))
    declared = client.post(
        "/api/v1/files/",
        json={
            "filename": "bench.bin",
            "size": total,
            "content_type": "application/octet-stream",
            "sha256": digest.hexdigest(),
        },
    )
    declared.raise_for_status()
    file = declared.json()
    assert file["chunk_size"] == chunk, file
    started = time.perf_counter()
    for index in range(count):
        response = client.put(
            f"/api/v1/files/{file['id']}/chunks/{index}", content=chunk_bytes(index, chunk, total, chunk)
        )
        assert response.status_code == 201, response.text
    uploaded = time.perf_counter()
    done = client.post(f"/api/v1/files/{file['id']}/complete")
    assert done.status_code == 200, done.text
    completed = time.perf_counter()
    peaks = {"upload_peak": sampler.peak if sampler else 0}
    if sampler:
        sampler.reset()
    received = hashlib.sha256()
    size = 0
    with client.stream("GET", f"/api/v1/files/{file['id']}/content") as response:
        assert response.status_code == 200, response.read()
        for piece in response.iter_bytes(1024 * 1024):
            size += len(piece)
            received.update(piece)
    downloaded = time.perf_counter()
    assert size == total and received.hexdigest() == digest.hexdigest(), "download differs"
    client.delete(f"/api/v1/files/{file['id']}")
    peaks["download_peak"] = sampler.peak if sampler else 0
    return {
        **peaks,
        "upload_s": uploaded - started,
        "complete_s": completed - uploaded,
        "download_s": downloaded - completed,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--port", type=int, default=18610)
    args = parser.parse_args()
    total, chunk = args.size_mib * MIB, args.chunk_mib * MIB

    folder = tempfile.mkdtemp(prefix="bench-files-")
    env = dict(
        os.environ,
        FILES_STORAGE="local",
        FILES_LOCAL_ROOT=folder,
        FILES_CHUNK_BYTES=str(chunk),
        FILES_TENANT_QUOTA_BYTES="0",
        # Plain http on the loopback (no TLS redirect), as the e2e tests do.
        DJANGO_SECURE="false",
    )
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(args.port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{args.port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        token = make_user()
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=600)
        sampler = RssSampler(server.pid)
        sampler.start()
        transfer(client, 3 * chunk + 1, chunk)  # warm-up: imports, pools, first requests
        time.sleep(0.5)
        baseline = rss_kib(server.pid)
        sampler.reset()
        times = transfer(client, total, chunk, sampler)
        sampler.running = False
        mib = total / MIB
        print(
            f"size                 {mib:.0f} MiB in {-(-total // chunk)} chunks of {args.chunk_mib} MiB (local backend)"
        )
        print(f"upload (chunk PUTs)  {times['upload_s']:.1f} s  {mib / times['upload_s']:.0f} MiB/s")
        print(f"complete (sha256)    {times['complete_s']:.1f} s  {mib / times['complete_s']:.0f} MiB/s")
        print(f"download (streamed)  {times['download_s']:.1f} s  {mib / times['download_s']:.0f} MiB/s")
        for phase in ("upload", "download"):
            peak = times[f"{phase}_peak"]
            print(
                f"server RSS {phase:<9} baseline {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
                f"growth {(peak - baseline) / 1024:.1f} MiB"
            )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
