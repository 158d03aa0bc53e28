"""``POST /v1/embeddings`` and ``POST /v1/responses``, enough for the SDK.

Embeddings are deterministic: each lower-cased word token gets a vector from
an RNG seeded by its SHA-256, a text is the normalised sum of its tokens'
vectors, so texts sharing words are close (useful for retrieval tests).
``text-embedding-3-*`` honour ``dimensions`` by cutting and renormalising,
as the real models allow. ``encoding_format`` ``float`` and ``base64``
(little-endian float32, what the SDK asks for by default) are both served.

``/v1/responses`` answers non-streaming requests with an echo of the last
user text, or ``EmulatorOptions.answer(text)``.

``GET /_emulator/stats`` (not an OpenAI route, no auth) returns
``EmulatorStats`` as JSON, for benchmarks that run the emulator as a process.

Errors use the API's JSON shape ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import re
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sim.realtime.auth import auth_error

if TYPE_CHECKING:
    from sim.realtime.server import RealtimeEmulator

__all__ = ["EMBEDDING_MODELS", "build_http_app", "embed"]

EMBEDDING_MODELS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_TOKEN = re.compile(r"\w+")
_CACHE_LIMIT = 50_000
_vectors: dict[tuple[str, int], npt.NDArray[np.float64]] = {}


def _token_vector(token: str, dim: int) -> npt.NDArray[np.float64]:
    key = (token, dim)
    vec = _vectors.get(key)
    if vec is None:
        if len(_vectors) >= _CACHE_LIMIT:
            _vectors.clear()
        seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big")
        vec = np.random.default_rng(seed).standard_normal(dim)
        _vectors[key] = vec
    return vec


def embed(text: str, dim: int, native: int) -> npt.NDArray[np.float32]:
    """A unit vector for ``text``: cut from the model's ``native`` size to ``dim``."""
    tokens = _TOKEN.findall(text.lower()) or [text]
    total = np.sum([_token_vector(t, native) for t in tokens], axis=0)[:dim]
    norm = float(np.linalg.norm(total)) or 1.0
    unit: npt.NDArray[np.float32] = (total / norm).astype(np.float32)
    return unit


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
    return _json(body, status)


def build_http_app(emulator: RealtimeEmulator) -> Starlette:
    async def guarded(request: Request) -> Response | dict[str, Any]:
        problem = auth_error(request.headers.get("authorization"), emulator.options.api_key)
        if problem is not None:
            return _json(problem, 401)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        return body

    async def embeddings(request: Request) -> Response:
        body = await guarded(request)
        if isinstance(body, Response):
            return body
        return _embeddings(body)

    async def responses(request: Request) -> Response:
        body = await guarded(request)
        if isinstance(body, Response):
            return body
        return _responses(body, emulator.options.answer)

    async def stats(request: Request) -> Response:
        return _json(dataclasses.asdict(emulator.stats()))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        message = f"Invalid URL ({request.method} {request.url.path})"
        return _error(status, message)

    return Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/_emulator/stats", stats, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )


def _embeddings(body: dict[str, Any]) -> Response:
    model = body.get("model")
    if not isinstance(model, str):
        return _error(
            400, "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    native = EMBEDDING_MODELS.get(model)
    if native is None:
        return _error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    texts = _inputs(body.get("input"))
    if texts is None:
        return _error(400, "'$.input' is invalid. Please check the API reference.", "input")
    dim = body.get("dimensions", native)
    if "dimensions" in body and (model == "text-embedding-ada-002" or not isinstance(dim, int)):
        return _error(
            400, f"This model does not support specifying dimensions: {model}.", "dimensions"
        )
    if not 1 <= dim <= native:
        return _error(400, f"Invalid value for 'dimensions': must be 1..{native}.", "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return _error(400, f"Invalid value: '{encoding}'.", "encoding_format", "invalid_value")
    data = []
    tokens = 0
    for index, text in enumerate(texts):
        vector = embed(text, dim, native)
        tokens += len(_TOKEN.findall(text)) or 1
        value: object = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode()
            if encoding == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": value})
    return _json(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _inputs(value: object) -> list[str] | None:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) and v for v in value):
            return list(value)
        if all(isinstance(v, int) for v in value):
            return [" ".join(f"t{v}" for v in value)]
        if all(isinstance(v, list) and v and all(isinstance(i, int) for i in v) for v in value):
            return [" ".join(f"t{i}" for i in v) for v in value]
    return None


def _last_user_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return None
    for item in reversed(value):
        if isinstance(item, dict) and item.get("role", "user") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [p.get("text", "") for p in content if isinstance(p, dict)]
                return " ".join(t for t in texts if t)
    return None


def _responses(body: dict[str, Any], answer: Any) -> Response:
    model = body.get("model")
    if not isinstance(model, str):
        return _error(
            400, "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if body.get("stream"):
        return _error(
            400, "The emulator does not stream /v1/responses.", "stream", "unsupported_value"
        )
    text = _last_user_text(body.get("input"))
    if text is None:
        return _error(
            400, "Missing required parameter: 'input'.", "input", "missing_required_parameter"
        )
    reply = answer(text) if answer is not None else f"Echo: {text}"
    digest = hashlib.sha256(f"{model}\n{text}".encode()).hexdigest()
    now = int(time.time())
    in_tokens = math.ceil((len(text) + len(body.get("instructions") or "")) / 4)
    out_tokens = math.ceil(len(reply) / 4)
    return _json(
        {
            "id": f"resp_{digest[:32]}",
            "object": "response",
            "created_at": now,
            "completed_at": now,
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{digest[32:64]}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": reply, "annotations": []}],
                }
            ],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": {
                "input_tokens": in_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": out_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": in_tokens + out_tokens,
            },
            "user": body.get("user"),
            "metadata": body.get("metadata", {}),
        }
    )
