"""Remote backends: a prompt built here, sent as text to a team server, streamed back token by token.

Three protocols (``remote.kind``):

* ``llama-server``: ``POST /completion`` with ``cache_prompt`` and ``id_slot``, so that one user's
  requests land on one slot and its KV cache (the prefix typed so far) is reused across keystrokes;
* ``openai``: ``POST /v1/completions`` with a raw prompt and ``stream: true`` (server-sent events):
  vLLM, SGLang, llama-server's OpenAI endpoint and llama-cpp-python's server;
* ``ollama``: ``POST /api/generate`` with ``raw: true`` (newline-delimited JSON).

Streaming keeps shaping local: ``stop_at`` sees the text after every token, and the time budget
is checked per token, as for the in-process model. Leaving the stream early (shaping said done,
the budget ran out, the request was cancelled) closes the HTTP connection, which is how
llama-server, vLLM and llama-cpp-python's server learn to stop generating.

One ``RemoteBackend`` per engine holds one ``httpx.AsyncClient`` (a connection pool: kept-alive
connections are reused). Its coroutines run on the event loop of ``RemoteLane`` (``router.py``).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import RemoteConfig
from ..context.privacy import redact
from .model import Generation

log = logging.getLogger(__name__)

ERROR_BODY_CHARS = 300
"""How much of an error response goes into the message."""


class RemoteError(Exception):
    """The server could not be reached, refused the request or broke off the answer."""


def user_slot(total_slots: int) -> int:
    """This user's llama-server slot: a stable hash of user and host name over the server's slots
    (no network: ``gethostname`` reads the kernel's name)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    digest = hashlib.sha256(f"{user}@{socket.gethostname()}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % max(total_slots, 1)


@dataclass
class _Chunk:
    text: str = ""
    done: bool = False
    finish: str = ""
    """Why the server stopped: eog (end of generation, a stop word) or length."""
    prompt_tokens: int | None = None
    evaluated: int | None = None
    """Prompt tokens the server evaluated for this request."""
    cached: int | None = None
    """Prompt tokens the server took from its cache."""


class Protocol:
    """One server API: the request body and how to read its stream."""

    kind = ""
    path = ""
    ndjson = False

    def body(self, prompt: str, max_tokens: int, model: str, stop: list[str], slot: int | None,
             lora: int = -1) -> dict[str, Any]:
        raise NotImplementedError

    def chunk(self, data: dict[str, Any]) -> _Chunk:
        raise NotImplementedError


class LlamaServerProtocol(Protocol):
    kind = "llama-server"
    path = "/completion"

    def body(self, prompt: str, max_tokens: int, model: str, stop: list[str], slot: int | None,
             lora: int = -1) -> dict[str, Any]:
        body: dict[str, Any] = {
            # timings_per_token: the cache counts come with the first token, not only at the end (a
            # stream closed early by shaping has no end).
            "prompt": prompt, "n_predict": max_tokens, "stream": True, "cache_prompt": True, "timings_per_token": True,
            "temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0, "stop": stop,
            "id_slot": -1 if slot is None else slot,
        }
        if model:
            body["model"] = model
        if lora >= 0:
            body["lora"] = [{"id": lora, "scale": 1.0}]
        return body

    def chunk(self, data: dict[str, Any]) -> _Chunk:
        out = _Chunk(str(data.get("content") or ""), bool(data.get("stop")))
        if out.done:
            out.finish = "length" if data.get("stop_type") == "limit" else "eog"
        timings = data.get("timings") or {}
        if "prompt_n" in timings:
            out.evaluated = int(timings["prompt_n"])
        if "cache_n" in timings:
            out.cached = int(timings["cache_n"])
        if "tokens_evaluated" in data:
            out.prompt_tokens = int(data["tokens_evaluated"])
            if out.cached is None and out.evaluated is not None:
                out.cached = max(0, out.prompt_tokens - out.evaluated)
        return out


class OpenAIProtocol(Protocol):
    kind = "openai"
    path = "/v1/completions"

    def body(self, prompt: str, max_tokens: int, model: str, stop: list[str], slot: int | None,
             lora: int = -1) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            # continuous_usage_stats (vLLM): the usage, with cached tokens, in every chunk, so a stream
            # closed early still reports it; servers that do not know it ignore it.
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}, "stop": stop,
            # llama-cpp-python's server penalises repeats by default (1.1), which changes greedy
            # code (a name used twice); vLLM and SGLang ignore the field.
            "repeat_penalty": 1.0,
        }
        if model:
            body["model"] = model
        return body

    def chunk(self, data: dict[str, Any]) -> _Chunk:
        out = _Chunk()
        choices = data.get("choices") or []
        if choices:
            choice = choices[0]
            out.text = str(choice.get("text") or "")
            finish = choice.get("finish_reason")
            if finish:
                out.done, out.finish = True, "length" if finish == "length" else "eog"
        usage = data.get("usage") or {}
        if usage.get("prompt_tokens") is not None:
            out.prompt_tokens = int(usage["prompt_tokens"])
            details = usage.get("prompt_tokens_details") or {}
            if details.get("cached_tokens") is not None:  # vLLM (--enable-prompt-tokens-details), SGLang
                out.cached = int(details["cached_tokens"])
                out.evaluated = out.prompt_tokens - out.cached
        timings = data.get("timings") or {}  # llama-server's OpenAI endpoint
        if "prompt_n" in timings:
            out.evaluated = int(timings["prompt_n"])
            if "cache_n" in timings:
                out.cached = int(timings["cache_n"])
        return out


class OllamaProtocol(Protocol):
    kind = "ollama"
    path = "/api/generate"
    ndjson = True

    def body(self, prompt: str, max_tokens: int, model: str, stop: list[str], slot: int | None,
             lora: int = -1) -> dict[str, Any]:
        return {"model": model, "prompt": prompt, "raw": True, "stream": True,
                "options": {"temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0, "num_predict": max_tokens,
                            "stop": stop}}

    def chunk(self, data: dict[str, Any]) -> _Chunk:
        out = _Chunk(str(data.get("response") or ""), bool(data.get("done")))
        if out.done:
            out.finish = "length" if data.get("done_reason") == "length" else "eog"
            if data.get("prompt_eval_count") is not None:
                out.evaluated = int(data["prompt_eval_count"])
        return out


PROTOCOLS: dict[str, type[Protocol]] = {p.kind: p for p in (LlamaServerProtocol, OpenAIProtocol, OllamaProtocol)}


@dataclass
class RemoteUsage:
    """What the server said about the last prompt (None: it did not say)."""

    prompt_tokens: int | None = None
    evaluated: int | None = None
    cached: int | None = None


class RemoteBackend:
    """One team server: its protocol, credentials, timeouts and one pooled HTTP client.

    ``stream`` must run on one event loop (the remote lane's): httpx's async client belongs to
    the loop it first ran on."""

    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        self.protocol = PROTOCOLS[config.kind]()
        base = config.url.rstrip("/")
        if config.kind == "openai" and base.endswith("/v1"):
            base = base[:-3]  # OpenAI clients are often given the /v1 base URL
        self.base_url = base
        self.endpoint = base + self.protocol.path
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(config.timeout_ms / 1000, connect=config.connect_timeout_ms / 1000)
        # trust_env=False: no proxy or .netrc from the environment decides where code goes.
        self.client = httpx.AsyncClient(headers=headers, timeout=timeout, trust_env=False,
                                        limits=httpx.Limits(max_connections=8, max_keepalive_connections=4))
        self._slot: int | None = None if config.slot == -1 else config.slot
        self._slot_known = config.kind != "llama-server" or config.slot != -1
        self.last_usage = RemoteUsage()

    def describe(self) -> str:
        model = f", model {self.config.model}" if self.config.model else ""
        if self.config.kind == "llama-server" and self.config.lora >= 0:
            model += f", adapter {self.config.lora}"
        name = {"llama-server": "llama-server", "openai": "OpenAI-compatible server", "ollama": "Ollama server"}
        return f"{name[self.config.kind]} at {redact(self.base_url)}{model}"

    async def _resolve_slot(self) -> int | None:
        """llama-server: this user's slot, from the server's ``total_slots`` (asked once)."""
        if self._slot_known:
            return None if self._slot == -2 else self._slot
        self._slot_known = True
        try:
            response = await self.client.get(self.base_url + "/props")
            total = int(response.json().get("total_slots") or 1) if response.status_code == 200 else 1
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.info("llama-server /props unavailable (%s): the server picks the slot", exc)
            self._slot = None
            return None
        self._slot = user_slot(total)
        log.info("llama-server has %d slots; this user's requests go to slot %d", total, self._slot)
        return self._slot

    async def _events(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        """The JSON objects of a server-sent event stream or of newline-delimited JSON."""
        async for line in response.aiter_lines():
            line = line.strip()
            if not line:
                continue
            if not self.protocol.ndjson:
                if not line.startswith("data:"):
                    continue  # comments (": ping"), event names, ids
                line = line[5:].strip()
                if line == "[DONE]":
                    continue  # read on to the end of the body: a connection read to its end is reused
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise RemoteError(f"the server sent something that is not JSON: {line[:80]!r}") from exc
            if not isinstance(data, dict):
                raise RemoteError(f"the server sent {line[:80]!r}")
            if "error" in data:
                error = data["error"]
                message = error.get("message", error) if isinstance(error, dict) else error
                raise RemoteError(f"the server reported an error: {message}")
            yield data

    async def stream(self, prompt: str, *, max_tokens: int, stop: list[str],
                     stop_at: Callable[[str], int | None] | None = None, time_budget_ms: float = 1e9) -> Generation:
        """Generate from ``prompt`` (text, special tokens written out), greedily. Stops when the
        server does, when ``stop_at(text)`` returns where the answer ends, or once the time budget
        is spent at the next line boundary (at twice the budget in any case). Raises
        ``RemoteError`` when the server cannot be reached, refuses, times out or breaks off; a
        cancelled task closes the connection."""
        t0 = time.perf_counter()
        slot = await self._resolve_slot() if self.protocol.kind == "llama-server" else None
        body = self.protocol.body(prompt, max_tokens, self.config.model, stop, slot, self.config.lora)
        text, reason, n = "", "length", 0
        usage = RemoteUsage()
        t_first: float | None = None
        finished = False
        try:
            async with self.client.stream("POST", self.endpoint, json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode("utf-8", "replace")[:ERROR_BODY_CHARS]
                    raise RemoteError(_status_message(response.status_code, detail, self.config.api_key_env))
                async for data in self._events(response):
                    chunk = self.protocol.chunk(data)
                    for name in ("prompt_tokens", "evaluated", "cached"):
                        if getattr(chunk, name) is not None:
                            setattr(usage, name, getattr(chunk, name))
                    if finished:
                        continue  # read to the end (usage comes last): the connection stays reusable
                    if chunk.text:
                        now = time.perf_counter()
                        t_first = t_first or now
                        n += 1
                        text += chunk.text
                        cut = _first_stop(text, stop)
                        end = stop_at(text) if stop_at else None
                        if cut is not None and (end is None or cut < end):
                            text, reason = text[:cut], "eog"
                            break
                        if end is not None:
                            text, reason = text[:end], "stop"
                            break
                        deadline = t_first + time_budget_ms / 1000
                        if now > deadline and ("\n" in text or now > deadline + time_budget_ms / 1000):
                            reason = "time"
                            break
                    if chunk.done:
                        finished, reason = True, chunk.finish
                # Leaving the block early closes the response and its connection: the server sees it.
        except httpx.TimeoutException as exc:
            raise RemoteError(f"the server did not answer within {self.config.timeout_ms} ms "
                              f"({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise RemoteError(f"{type(exc).__name__}: {exc or 'connection failed'}") from exc
        if not finished and reason == "length" and n < max_tokens:
            raise RemoteError(f"the server closed the stream after {n} tokens without finishing")
        t2 = time.perf_counter()
        self.last_usage = usage
        first = t_first or t2
        return Generation(text, n, usage.evaluated if usage.evaluated is not None else -1,
                          usage.cached if usage.cached is not None else -1,
                          (first - t0) * 1000, (t2 - first) * 1000, reason, [], "remote")

    async def aclose(self) -> None:
        await self.client.aclose()


def _first_stop(text: str, stop: list[str]) -> int | None:
    """Where the first stop string starts in ``text`` (a server that writes special tokens out)."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def _status_message(status: int, detail: str, key_env: str) -> str:
    if status in (401, 403):
        return (f"the server refused the request (HTTP {status}): check the API key in the environment "
                f"variable {key_env or '(remote.api_key_env is empty)'}; {detail}")
    return f"the server answered HTTP {status}: {detail}"
