"""Upload helpers of the files tests."""

import hashlib


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic bytes that differ from chunk to chunk."""
    block = hashlib.sha256(str(seed).encode()).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(block + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def declare(client, data: bytes, *, filename="report.pdf", content_type="application/pdf", sha256=None, size=None):
    return client.post(
        "/api/v1/files/",
        {
            "filename": filename,
            "size": len(data) if size is None else size,
            "content_type": content_type,
            "sha256": sha256 or hashlib.sha256(data).hexdigest(),
        },
        format="json",
    )


def put_chunk(client, file_id, index: int, body: bytes):
    return client.put(f"/api/v1/files/{file_id}/chunks/{index}", data=body, content_type="application/octet-stream")


def chunk_of(data: bytes, index: int, chunk_size: int) -> bytes:
    return data[index * chunk_size : (index + 1) * chunk_size]


def upload(client, data: bytes, **kwargs) -> dict:
    """Declares, puts every chunk and completes; returns the completed file's body."""
    created = declare(client, data, **kwargs)
    assert created.status_code == 201, created.content
    body = created.json()
    for index in range(body["chunk_count"]):
        response = put_chunk(client, body["id"], index, chunk_of(data, index, body["chunk_size"]))
        assert response.status_code == 201, response.content
    done = client.post(f"/api/v1/files/{body['id']}/complete")
    assert done.status_code == 200, done.content
    return done.json()


def content_of(response) -> bytes:
    return b"".join(response)
