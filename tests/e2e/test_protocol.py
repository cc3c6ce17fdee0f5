"""The wire protocol's edge cases, as raw bytes written to ``slm-lsp serve``'s stdin.

Bad frames (lengths that overflow or would allocate a terabyte, negative, non-numeric or missing
lengths, bodies that are not JSON, not an object, or a batch) are rejected with a logged error,
and the server resynchronises: after each one, a normal inline completion request is answered.
Every request the server can identify gets an answer, including one whose params hold an
object with a ``"jsonrpc"`` key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from slm_lsp.bench.wire import WireClient, did_open, frame, position_params
from slm_lsp.server import MAX_HEADER_BYTES, MAX_MESSAGE_BYTES
from tests.conftest import TINY_MODEL, server_command

URI = "file:///protocol/demo.py"
TEXT = "def area(radius):\n    return \n"
PARSE_ERROR, INVALID_REQUEST = -32700, -32600


class Server:
    """One server for the module; a test that kills it gets the next test a fresh one."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.client: WireClient | None = None

    def running(self) -> WireClient:
        if self.client is None or not self.client.alive:
            if self.client is not None:
                self.client.close()
            self.client = WireClient(server_command("--model", str(TINY_MODEL), "--log-file", str(self.log_file)))
            assert "result" in self.client.initialize({"completion": {"maxTokens": 4}})
            self.client.notify("textDocument/didOpen", did_open(URI, TEXT))
        return self.client

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("protocol") / "server.log")
    yield server
    if server.client is not None:
        server.client.close()


@pytest.fixture
def client(server: Server) -> Iterator[WireClient]:
    wire = server.running()
    wire.unmatched.clear()
    yield wire
    assert_answers(wire)


def assert_answers(client: WireClient) -> None:
    """A normal request gets a result (not an error) and the process is alive."""
    response = client.request("textDocument/inlineCompletion", position_params(URI, 1, 11), timeout=60)
    assert "result" in response, response
    assert response["result"]["items"], "the tiny model always completes here"
    assert client.alive


def request_bytes(msg_id: int, method: str = "workspace/executeCommand", params: object = None) -> bytes:
    return frame({"jsonrpc": "2.0", "id": msg_id, "method": method,
                  "params": params if params is not None else {"command": "slm.status"}})


@pytest.mark.parametrize("length", [b"99999999999999999999", b"%d" % 2**40, b"%d" % (MAX_MESSAGE_BYTES + 1),
                                    b"-5", b"abc", b"", b"0x10", b"1e3"])
def test_bad_content_length_is_rejected_and_the_next_message_read(client, server, length):
    client.send_bytes(b"Content-Length: " + length + b"\r\n\r\n" + json.dumps(
        {"jsonrpc": "2.0", "id": 9000, "method": "shutdown"}).encode())
    # The next frame follows the rejected body directly, as a client's next write would.
    assert "result" in client.request("workspace/executeCommand", {"command": "slm.status"}, timeout=60)
    assert client.take_response(9000) is None  # the rejected frame's body was not read as a message
    assert f"rejected a message with Content-Length {length!r}" in server.log()


def test_missing_content_length_is_skipped(client, server):
    client.send_bytes(b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{\"jsonrpc\": \"2.0\"}")
    assert "result" in client.request("workspace/executeCommand", {"command": "slm.status"}, timeout=60)
    assert "skipped" in server.log()


def test_garbage_between_frames_is_skipped(client):
    client.send_bytes(b"\x00\xff garbage \r\n\r\n\r\nnot a header at all\n" + bytes(range(256)) * 300)


def test_header_block_without_end_is_rejected(client, server):
    client.send_bytes(b"Content-Length: 10\r\nX-Junk: " + b"x" * (MAX_HEADER_BYTES * 2))
    client.send_bytes(b"\r\n\r\n0123456789")
    assert_answers(client)
    assert f"rejected a header block longer than {MAX_HEADER_BYTES} bytes" in server.log()


@pytest.mark.parametrize("body", [b"{abc}", b"\xff\xfe{}", b"", b"[" * 100_000 + b"]" * 100_000],
                         ids=["invalid-json", "invalid-utf8", "empty", "nested-100k"])
def test_a_body_that_is_not_json_gets_a_parse_error(client, body):
    client.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    errors = client.wait_unmatched(1)
    assert errors and errors[0]["error"]["code"] == PARSE_ERROR


@pytest.mark.parametrize("body", [42, "text", None, True, {"id": 5, "method": "shutdown"},
                                  {"jsonrpc": "1.0", "id": 5, "method": "shutdown"}],
                         ids=["number", "string", "null", "bool", "no-jsonrpc", "jsonrpc-1.0"])
def test_a_body_that_is_not_a_json_rpc_object_gets_invalid_request(client, body):
    client.send(body)
    if isinstance(body, dict):  # a request with an id: answered under that id
        assert client.wait(5)["error"]["code"] == INVALID_REQUEST
    else:
        errors = client.wait_unmatched(1)
        assert errors and errors[0]["error"]["code"] == INVALID_REQUEST


def test_a_batch_is_answered_per_request(client):
    status = {"jsonrpc": "2.0", "method": "workspace/executeCommand", "params": {"command": "slm.status"}}
    client.send([{**status, "id": 701}, {"jsonrpc": "2.0", "method": "initialized", "params": {}},
                 {**status, "id": "702"}])
    assert client.wait(701)["error"]["code"] == INVALID_REQUEST
    assert client.wait("702")["error"]["code"] == INVALID_REQUEST
    client.send([])
    errors = client.wait_unmatched(1)
    assert errors and errors[0]["error"]["code"] == INVALID_REQUEST


@pytest.mark.parametrize("arguments", [
    [{"jsonrpc": "2.0"}],
    [{"jsonrpc": "2.0", "method": "exit"}],
    [{"jsonrpc": "2.0", "id": 1, "method": "shutdown", "params": None}],
    [{"nested": [{"jsonrpc": "2.0", "id": 3, "result": None}]}],
], ids=["bare", "notification", "request", "nested-response"])
def test_an_object_with_a_jsonrpc_key_inside_params_is_answered(client, arguments):
    response = client.request("workspace/executeCommand", {"command": "slm.status", "arguments": arguments})
    assert response["result"]["state"]


def test_a_jsonrpc_key_inside_position_params_gets_an_error(client):
    params = position_params(URI, 1, 11)
    params["position"] = {"jsonrpc": "2.0", "id": 1, "method": "x"}
    assert "error" in client.request("textDocument/inlineCompletion", params)


def test_an_integer_past_pythons_digit_limit_does_not_lose_the_request(client):
    huge = "9" * 5000
    body = (f'{{"jsonrpc": "2.0", "id": 88, "method": "workspace/executeCommand", '
            f'"params": {{"command": "slm.status", "arguments": [{huge}]}}}}').encode()
    client.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert "result" in client.wait(88)


def test_frames_split_and_joined_across_writes(client):
    joined = request_bytes(801) + request_bytes(802) + request_bytes(803)
    for i in range(0, len(joined), 7):
        client.send_bytes(joined[i:i + 7])
    assert all("result" in client.wait(msg_id) for msg_id in (801, 802, 803))


def test_a_zero_length_frame_and_a_short_length(client):
    good = request_bytes(901)
    client.send_bytes(b"Content-Length: 0\r\n\r\n")
    client.send_bytes(b"Content-Length: 10\r\n\r\n" + good[good.index(b"{"):])  # 10 bytes of a longer body
    assert len(client.wait_unmatched(2)) == 2  # both: parse errors


def test_requests_after_shutdown_get_an_error_then_exit_is_clean():
    with WireClient(server_command("--model", str(TINY_MODEL))) as client:
        client.initialize()
        assert "result" in client.request("shutdown")
        response = client.request("workspace/executeCommand", {"command": "slm.status"})
        assert response["error"]["code"] == INVALID_REQUEST
        client.notify("exit")
        assert client.process.wait(30) == 0
