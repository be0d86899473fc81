"""`edgekit serve` on the tiny model: a real uvicorn server on a free localhost port, driven by the `openai`
client and raw HTTP: completions streamed and not, stop strings, seeds, the error shapes, keys, 429 when
full, and a disconnecting client freeing its slot."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
try:  # the HTTP client the openai package brings: httpx2 in its newer releases, httpx before
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip("httpx")

from edgekit.chat.engine import ChatEngine, Info  # noqa: E402
from edgekit.serve.app import ServeSettings, create_app  # noqa: E402

MODEL = "tiny:d4-w100"
PROMPT = [{"role": "user", "content": "Where do edge devices run models?"}]


class SlowSession:
    """A real session that waits between tokens, so a test can act in the middle of a reply."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.runtime, self.device = inner.runtime, inner.device
        self.context_length, self.eos_ids = inner.context_length, inner.eos_ids

    def stream(self, ids, sampling):
        for token in self.inner.stream(ids, sampling):
            time.sleep(self.delay)
            yield token


class Running:
    """The app under uvicorn in a thread, on a free port."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, key: str = "none", **kw):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _engine(session, tokenizer, context: int = 512) -> ChatEngine:
    return ChatEngine(session, tokenizer, Info("tiny", "d4-w100", "torch", "fp32", "cpu", context_length=context))


@pytest.fixture(scope="module")
def server(torch_session, tokenizer):
    running = Running(create_app(_engine(torch_session, tokenizer), ServeSettings(MODEL, ("tiny",), max_body=4096)))
    yield running
    running.stop()


def test_completion_streamed_and_not_agree_and_count_tokens(server: Running):
    client = server.client()
    whole = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    assert whole.object == "chat.completion" and whole.model == MODEL and text
    assert whole.choices[0].finish_reason in ("stop", "length")
    u = whole.usage
    assert u.prompt_tokens > 5 and 1 <= u.completion_tokens <= 12
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    chunks = list(client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip() == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == u.completion_tokens and not chunks[-1].choices
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_min_tokens_holds_the_end_of_turn_back(server: Running):
    """vLLM's min_tokens extension: a reply of exactly max_tokens when both are the same (what bench/serve.py
    asks for), and a negative one refused."""
    client = server.client()
    reply = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=20, temperature=0,
                                           extra_body={"min_tokens": 20})  # fmt: skip
    assert reply.usage.completion_tokens == 20 and reply.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=PROMPT, extra_body={"min_tokens": -1})


def test_stop_strings_cut_the_reply(server: Running):
    client = server.client()
    text = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=24, temperature=0)
    full = text.choices[0].message.content
    stop = full[6:9]
    assert stop and stop in full
    cut = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == full[: full.find(stop)].strip()
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=24, temperature=0, stop=stop,
                                              stream=True)  # fmt: skip
    pieces = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert stop not in pieces and pieces.strip() == full[: full.find(stop)].strip()


def test_a_seed_draws_the_same_sampled_reply(server: Running):
    client = server.client()

    def draw(seed: int) -> str:
        r = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=16, temperature=1.0, seed=seed)
        return r.choices[0].message.content

    assert draw(7) == draw(7)
    assert len({draw(s) for s in (1, 2, 3, 4)}) > 1


def test_bad_requests_get_openai_error_bodies_and_the_server_keeps_running(server: Running):
    client = server.client()
    raw = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json", timeout=10)
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
    assert "messages" in str(exc.value)
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=PROMPT, max_tokens=4)
    assert "gpt-4o" in str(exc.value) and MODEL in str(exc.value)
    big = httpx.post(f"{server.url}/v1/chat/completions", content=json.dumps({"messages": [{"role": "user",
                     "content": "x " * 4000}]}), timeout=10)  # fmt: skip
    assert big.status_code == 413 and "limit is 4,096" in big.json()["error"]["message"]
    with pytest.raises(openai.APIStatusError) as exc:  # through the client too
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "edge " * 1500}])
    assert exc.value.status_code == 413
    ok = client.chat.completions.create(model="tiny", messages=PROMPT, max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_a_prompt_longer_than_the_context_is_400_saying_the_limit(torch_session, tokenizer):
    running = Running(create_app(_engine(torch_session, tokenizer, context=64), ServeSettings(MODEL)))
    try:
        with pytest.raises(openai.BadRequestError) as exc:
            running.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "edge " * 80}],
                                                     max_tokens=4)  # fmt: skip
        assert "context window of 64" in str(exc.value)
    finally:
        running.stop()


def test_a_wrong_key_is_401_and_the_right_one_works(torch_session, tokenizer):
    running = Running(create_app(_engine(torch_session, tokenizer), ServeSettings(MODEL, api_key="s3cret")))
    try:
        with pytest.raises(openai.AuthenticationError):
            running.client("wrong").chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            running.client("s3cret-but-longer").models.list()
        assert running.client("s3cret").chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=2).choices
        assert httpx.get(f"{running.url}/health").status_code == 200  # health needs no key
    finally:
        running.stop()


def test_a_full_server_answers_429_at_once_and_a_gone_client_frees_its_slot(torch_session, tokenizer):
    slow = SlowSession(torch_session, 0.05)
    running = Running(create_app(_engine(slow, tokenizer), ServeSettings(MODEL, queue=0)))
    try:
        body = {"model": MODEL, "messages": PROMPT, "max_tokens": 200, "temperature": 0, "stream": True}
        with httpx.Client(timeout=30) as http, http.stream("POST", f"{running.url}/v1/chat/completions",
                                                           json=body) as first:  # fmt: skip
            lines = first.iter_lines()
            assert next(lines).startswith("data: ")  # the reply is running
            start = time.perf_counter()
            with pytest.raises(openai.RateLimitError):
                running.client().chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=2)
            assert time.perf_counter() - start < 2, "429 must come at once, not after the running reply"
        # the first client hung up mid-reply (200 tokens at 50 ms would take 10 s): its slot frees within a token
        deadline = time.time() + 3
        while httpx.get(f"{running.url}/health").json()["active"] and time.time() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{running.url}/health").json()["active"] == 0
        assert running.client().chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=2).choices
    finally:
        running.stop()


def test_serve_cli_refuses_a_port_in_use_and_warns_about_an_open_host(cli, tmp_path: Path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = cli("serve", str(tmp_path), "--port", str(port))
    assert r.code == 5 and f"port {port} on 127.0.0.1 is in use" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("serve", str(tmp_path / "nothing"), "--host", "0.0.0.0", "--port", str(port))
    assert r.code != 0 and "without --api-key" in r.err and "Traceback" not in r.err


def test_chat_talks_to_a_running_server(server: Running, cli):
    from edgekit.chat.remote import RemoteChatEngine
    from edgekit.engines import Sampling
    from edgekit.errors import ResourceError

    engine = RemoteChatEngine(server.url)
    assert engine.info.model == "tiny" and engine.info.shape == "d4-w100" and engine.info.context_length == 512
    remote = engine.complete(PROMPT, Sampling(max_new_tokens=12))
    local = server.client().chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=12, temperature=0)
    assert remote.text == local.choices[0].message.content and remote.new_tokens == local.usage.completion_tokens
    assert remote.prompt_tokens == local.usage.prompt_tokens and remote.ttft_ms > 0
    r = cli("chat", "--url", server.url, "--prompt", PROMPT[0]["content"], "--max-new-tokens", "12", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["reply"] == remote.text
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(ResourceError, match="cannot reach"):
        RemoteChatEngine(f"http://127.0.0.1:{free}")
    r = cli("chat", "--url", f"http://127.0.0.1:{free}", "--prompt", "hi")
    assert r.code == 5 and "cannot reach" in r.err and len(r.err.strip().splitlines()) == 1
