"""A fake OpenAI-compatible chat-completions server for tests and local runs.

`POST /v1/chat/completions` answers with the published response shape (id, object, created, model,
choices, usage) and realistic, messy question lists: preambles, numbering in several styles, bullets,
blank lines, closing remarks, duplicates and sometimes fewer questions than asked. Answers depend only
on the prompt. Faults (a 500, a 429 with Retry-After, ...) can be queued; every request is logged.
`GET /docs/NAME` serves documents given to the server, for http(s):// document tests.

    async with FakeLLM(faults=[Fault(500)]) as llm:
        client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="x")

    python -m tests.fakes.fake_llm --port 8010          # for local runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_CONTEXT = re.compile(r"-{5,}\s*\n(.*?)\n\s*-{5,}", re.DOTALL)
_NUMBER = re.compile(r"(\d+)\s+questions", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]{3,}")
_TEMPLATES = (
    "What does the passage say about {p}?",
    "How is {p} described in the text?",
    "Why does the document mention {p}?",
    "Which role does {p} play according to the context?",
    "Explain the significance of {p} in the passage.",
    "What can be concluded about {p} from the text?",
    "How does {p} relate to the rest of the document?",
)


@dataclass
class Fault:
    """One injected failure: an HTTP status, optionally with a Retry-After header and a delay."""

    status: int
    retry_after: str | None = None
    message: str = "injected fault"
    delay: float = 0.0


@dataclass
class RequestRecord:
    """One request the server received."""

    path: str
    status: int
    at: float  # time.monotonic()
    model: str | None = None
    prompt: str | None = None
    authorization: str | None = None
    answer: str | None = None


def _phrases(context: str, h: bytes, count: int) -> list[str]:
    words = _WORD.findall(context) or ["the topic"]
    out: list[str] = []
    seen: set[str] = set()
    start = h[1] % len(words)
    for i in range(len(words)):
        w = start + i * 3
        phrase = " ".join(words[(w + j) % len(words)] for j in range(2)).lower()
        if phrase not in seen:
            seen.add(phrase)
            out.append(phrase)
        if len(out) >= count:
            break
    while len(out) < count:
        out.append(f"{out[-1] if out else 'the topic'} ({len(out) + 1})")
    return out


def messy_answer(prompt: str) -> str:
    """A deterministic, realistically messy list of questions about the prompt's context."""
    h = hashlib.sha256(prompt.encode("utf-8")).digest()
    m = _CONTEXT.search(prompt)
    context = m.group(1) if m else prompt
    n_match = _NUMBER.search(prompt)
    n = int(n_match.group(1)) if n_match else 2
    style = h[0] % 8
    give = max(1, n - 1) if style == 6 else n
    phrases = _phrases(context, h, give)
    qs = [_TEMPLATES[(h[2] + i) % len(_TEMPLATES)].format(p=p) for i, p in enumerate(phrases)]
    if style == 0:
        return (
            f"Here are {n} questions based on the context:\n\n"
            + "\n".join(f"{i}. {q}" for i, q in enumerate(qs, 1))
            + "\n"
        )
    if style == 1:
        return "\n\n".join(f"{i}) {q}" for i, q in enumerate(qs, 1))
    if style == 2:
        return "\n".join(f"- {q}" for q in qs) + "\n\nI hope these questions help with your quiz!"
    if style == 3:
        return "\n".join(f"Q{i}: {q}" for i, q in enumerate(qs, 1))
    if style == 4:
        return "\n".join(f"**Question {i}:** {q}" for i, q in enumerate(qs, 1))
    if style == 5:  # a duplicate with other case and spacing
        dup = "  " + qs[0].upper().replace(" ", "  ")
        return "Sure!\n\n" + "\n".join(f"* {q}" for q in [qs[0], dup, *qs[1:]])
    if style == 6:  # fewer than asked
        return "Sure! Here are some questions:\n" + "\n".join(f"{i}. {q}" for i, q in enumerate(qs, 1))
    return "Questions:\n\n" + "\n".join(
        f"{i}. {q}\n   Answer: it is in the text." for i, q in enumerate(qs, 1)
    )


@dataclass
class FakeLLM:
    """The server; an async context manager that listens on 127.0.0.1 (a free port unless `port`)."""

    api_key: str | None = None
    faults: list[Fault] = field(default_factory=list)
    delay: float = 0.0
    documents: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # name -> (body, content type)
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[RequestRecord] = field(default_factory=list)
    _pending: deque[Fault] = field(default_factory=deque, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def chat_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def add_faults(self, *faults: Fault) -> None:
        self._pending.extend(faults)

    async def __aenter__(self) -> FakeLLM:
        self._pending.extend(self.faults)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/docs/{name}", self._doc)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-llm", "object": "model"}]})

    async def _doc(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests.append(
            RequestRecord(
                path=request.path, status=200 if name in self.documents else 404, at=time.monotonic()
            )
        )
        if name not in self.documents:
            return web.Response(status=404, text="not found")
        body, ctype = self.documents[name]
        return web.Response(body=body, content_type=ctype)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
        return web.json_response(
            {"error": {"message": message, "type": kind, "code": None}}, status=status, headers=headers
        )

    async def _chat(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization")
        record = RequestRecord(path=request.path, status=200, at=time.monotonic(), authorization=auth)
        self.requests.append(record)
        try:
            body: dict[str, Any] = await request.json()
            messages = body["messages"]
            prompt = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
            record.model, record.prompt = str(body["model"]), prompt
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            record.status = 400
            return self._error(400, "body must be JSON with model and messages")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            record.status = 401
            return self._error(401, "Incorrect API key provided")
        if self._pending:
            fault = self._pending.popleft()
            if fault.delay:
                await asyncio.sleep(fault.delay)
            record.status = fault.status
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            return self._error(fault.status, fault.message, headers)
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = messy_answer(prompt)
        record.answer = answer
        digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        prompt_tokens, completion_tokens = len(prompt.split()), len(answer.split())
        return web.json_response(
            {
                "id": f"chatcmpl-{digest[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": record.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


async def _serve(args: argparse.Namespace) -> None:
    async with FakeLLM(api_key=args.api_key, delay=args.delay, host=args.host, port=args.port) as llm:
        print(f"fake LLM listening on {llm.base_url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.fake_llm", description="A fake OpenAI-compatible chat-completions server."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8010, help="port to listen on (default 8010)")
    parser.add_argument("--api-key", default=None, help="require this bearer key (default: none)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def minimal_pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose text layer holds `lines` (Helvetica), for document-loading tests."""
    escaped = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({ln}) '" for ln in escaped) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out
