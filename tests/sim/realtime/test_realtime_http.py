"""``/v1/embeddings`` and ``/v1/responses`` through the real SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from openai.types.responses import Response

from sim.realtime.http_api import embed
from sim.testing_realtime import RunningRealtimeEmulator, run_realtime_emulator

pytestmark = pytest.mark.integration


def client(emu: RunningRealtimeEmulator, key: str = "sk-test") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=emu.base_url, max_retries=0)


@pytest_asyncio.fixture
async def api(emu: RunningRealtimeEmulator) -> AsyncIterator[AsyncOpenAI]:
    async with client(emu) as sdk:
        yield sdk


async def raw_post(emu: RunningRealtimeEmulator, path: str, body: object) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{emu.base_url}{path}", json=body, headers={"Authorization": "Bearer sk-test"}
        )


async def test_embeddings_are_deterministic_unit_vectors(
    emu: RunningRealtimeEmulator, api: AsyncOpenAI
) -> None:
    texts = ["book a dental cleaning", "book a dental checkup", "the weather in Paris"]
    result = await api.embeddings.create(model="text-embedding-3-small", input=texts)
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, 1536)
    assert [d.index for d in result.data] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # shared words are closer
    again = await api.embeddings.create(
        model="text-embedding-3-small", input=texts[0], encoding_format="float"
    )
    assert np.allclose(again.data[0].embedding, vectors[0], atol=1e-6)
    assert result.usage.prompt_tokens == 4 + 4 + 4
    assert result.model == "text-embedding-3-small"


async def test_dimensions_cut_the_vector(emu: RunningRealtimeEmulator, api: AsyncOpenAI) -> None:
    result = await api.embeddings.create(
        model="text-embedding-3-large", input="hello", dimensions=256
    )
    vector = np.array(result.data[0].embedding)
    assert vector.shape == (256,)
    full = embed("hello", 3072, 3072)
    assert np.allclose(vector, full[:256] / np.linalg.norm(full[:256]), atol=1e-5)


async def test_embedding_errors_have_the_api_shape(
    emu: RunningRealtimeEmulator, api: AsyncOpenAI
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await api.embeddings.create(model="text-embedding-9", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await api.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=10)
    with pytest.raises(openai.AuthenticationError) as denied:
        async with client(emu, "sk-nope-0000") as wrong:
            await wrong.embeddings.create(model="text-embedding-3-small", input="x")
    assert denied.value.code == "invalid_api_key"


async def test_responses_echo_and_validate(emu: RunningRealtimeEmulator, api: AsyncOpenAI) -> None:
    result = await api.responses.create(
        model="gpt-5", instructions="Be terse.", input="Is Monday free?"
    )
    assert result.output_text == "Echo: Is Monday free?"
    assert result.status == "completed"
    raw = await raw_post(emu, "/responses", {"model": "gpt-5", "input": "Is Monday free?"})
    Response.model_validate(raw.json())  # the JSON itself, strictly, not the SDK's lenient parse
    messages = await api.responses.create(
        model="gpt-5",
        input=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
        ],
    )
    assert messages.output_text == "Echo: second"
    assert messages.usage is not None and messages.usage.total_tokens > 0


async def test_responses_answer_hook_and_stream_refusal() -> None:
    async with (
        run_realtime_emulator(answer=lambda text: text.upper()) as emu,
        client(emu) as sdk,
    ):
        result = await sdk.responses.create(model="gpt-5", input="loud")
        assert result.output_text == "LOUD"
        with pytest.raises(openai.BadRequestError):
            await sdk.responses.create(model="gpt-5", input="x", stream=True)


async def test_unknown_routes_answer_in_the_api_error_shape(
    emu: RunningRealtimeEmulator, api: AsyncOpenAI
) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{emu.base_url}/chat/completions", json={})
        bad_json = await http.post(
            f"{emu.base_url}/embeddings",
            content=b"{",
            headers={"Authorization": "Bearer sk-test"},
        )
        stats = await http.get(f"http://{emu.host}:{emu.port}/_emulator/stats")
    assert response.status_code == 404
    assert stats.json()["sessions_total"] == 0
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert bad_json.status_code == 400
