"""A small OpenAI-compatible server on 127.0.0.1 for tests: it answers
``POST /v1/chat/completions`` from a script of responses, streamed as SSE or plain JSON,
and records every request it received."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self):
        self.script: list[dict] = []  # each: {"content": str} | {"tool_calls": [...]} | {"status": int} | {"sleep": s}
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def reply(self, content: str):
        self.script.append({"content": content})

    def call_tool(self, name: str, arguments: dict, call_id: str = "call_1"):
        self.script.append({"tool_calls": [{"id": call_id, "name": name, "arguments": json.dumps(arguments)}]})

    def fail(self, status: int = 500):
        self.script.append({"status": status})

    def garble(self):
        """Answer 200 with a stream whose chunk is not JSON."""
        self.script.append({"garbage": True})

    def hang(self, seconds: float):
        self.script.append({"sleep": seconds})

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                try:
                    self._answer()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away mid-answer (a cancelled turn, a killed worker)

            def _answer(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                step = fake.script.pop(0) if fake.script else {"content": "ok"}
                if "sleep" in step:
                    time.sleep(step["sleep"])
                    step = {"content": "too late"}
                if "status" in step:
                    payload = json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode()
                    self.send_response(step["status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if step.get("garbage"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    self.wfile.write(b"data: {not json\n\n")
                    return
                if body.get("stream"):
                    self._stream(body, step)
                else:
                    self._plain(body, step)

            def _chunk(self, delta, finish=None, usage=None):
                return {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "fake-model",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else [],
                    "usage": usage,
                }

            def _stream(self, body, step):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chunks = []
                if "tool_calls" in step:
                    for i, call in enumerate(step["tool_calls"]):
                        half = len(call["arguments"]) // 2
                        chunks.append(
                            self._chunk(
                                {
                                    "role": "assistant",
                                    "tool_calls": [
                                        {
                                            "index": i,
                                            "id": call["id"],
                                            "type": "function",
                                            "function": {"name": call["name"], "arguments": call["arguments"][:half]},
                                        }
                                    ],
                                }
                            )
                        )
                        chunks.append(
                            self._chunk(
                                {"tool_calls": [{"index": i, "function": {"arguments": call["arguments"][half:]}}]}
                            )
                        )
                    chunks.append(self._chunk({}, finish="tool_calls"))
                else:
                    words = step["content"].split(" ")
                    for i, word in enumerate(words):
                        chunks.append(self._chunk({"content": word + (" " if i < len(words) - 1 else "")}))
                    chunks.append(self._chunk({}, finish="stop"))
                chunks.append(
                    self._chunk(None, usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
                )
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _plain(self, body, step):
                message = {"role": "assistant", "content": step.get("content")}
                if "tool_calls" in step:
                    message["tool_calls"] = [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]},
                        }
                        for c in step["tool_calls"]
                    ]
                payload = json.dumps(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "fake-model",
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
