"""features/accept.py's pure parts: where the cursor lands after an accepted item, whether a
document has the accepted text yet, and the params' checks."""

from __future__ import annotations

import pytest
from lsprotocol import types

from slm_lsp.features.accept import Accept, accepted_command, applied, parse, position_after
from slm_lsp.features.documents import OpenDocument

UTF8, UTF16, UTF32 = (types.PositionEncodingKind.Utf8, types.PositionEncodingKind.Utf16,
                      types.PositionEncodingKind.Utf32)


def test_position_after_counts_in_the_clients_units():
    at = types.Position(4, 11)
    assert position_after(at, "x + 1", UTF16) == types.Position(4, 16)
    assert position_after(at, "f('\U0001f600')", UTF16) == types.Position(4, 11 + 7)  # the emoji is 2 units
    assert position_after(at, "f('\U0001f600')", UTF8) == types.Position(4, 11 + 9)
    assert position_after(at, "f('\U0001f600')", UTF32) == types.Position(4, 11 + 6)
    assert position_after(at, "(\n    a,\n)", UTF16) == types.Position(6, 1)


def test_the_command_carries_the_version_after_the_edit():
    command = accepted_command("file:///w/a.py", 7, types.Position(0, 2), "ab\ncd", UTF16)
    assert command.command == "slm.accepted"
    assert command.arguments == [{"uri": "file:///w/a.py", "version": 8, "position": {"line": 1, "character": 2},
                                  "text": "ab\ncd"}]


def accept(line: int, character: int, text: str, version: int | None = None) -> Accept:
    return Accept("file:///w/a.py", types.Position(line, character), text, version, 0.0)


def test_applied_once_the_text_is_before_the_cursor():
    doc = OpenDocument("file:///w/a.py", "def f():\n    return \n", 1, "python", UTF16)
    wanted = accept(2, 1, "x\n)", version=2)
    assert not applied(doc, wanted)  # line 2 does not exist yet
    doc.apply(types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(1, 11), types.Position(1, 11)), text="x\n)"))
    assert not applied(doc, wanted)  # the version is older than the accept's
    doc.version = 2
    assert applied(doc, wanted)
    assert applied(doc, accept(2, 1, "x\n)"))  # no version: the text decides
    assert not applied(doc, accept(2, 1, "y\n)"))


def test_applied_reads_crlf_inserted_by_the_editor_as_lf():
    doc = OpenDocument("file:///w/a.py", "a = (\r\n    1,\r\n)\r\n", 1, "python", UTF16)
    assert applied(doc, accept(2, 1, "(\n    1,\n)"))


@pytest.mark.parametrize("params, error", [
    (None, "object"), ([], "object"), ({"uri": 1, "text": "a", "position": {"line": 0, "character": 0}}, "string"),
    ({"uri": "u", "text": "a", "position": {"line": 0}}, "position"),
    ({"uri": "u", "text": "a", "position": {"line": True, "character": 0}}, "position"),
    ({"uri": "u", "text": "a", "position": {"line": 0, "character": 0}, "version": "2"}, "version"),
])
def test_bad_params_say_what_is_wrong(params, error):
    with pytest.raises(ValueError, match=error):
        parse(params)


def test_good_params():
    got = parse({"uri": "u", "text": "a", "position": {"line": 1, "character": 2}, "version": 3})
    assert (got.uri, got.position, got.text, got.version) == ("u", types.Position(1, 2), "a", 3)
