"""features/next_edit.py's pure parts: an edit's range in the client's units, the params' checks,
what counts as near the cursor, and the edit history fed from an open document's changes."""

from __future__ import annotations

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from slm_lsp.context.edit_history import EditHistory
from slm_lsp.engine.next_edit import NextEditResult, Replacement
from slm_lsp.features.documents import OpenDocument
from slm_lsp.features.next_edit import Suggestion, lsp_range, near_cursor, parse

UTF8, UTF16, UTF32 = (types.PositionEncodingKind.Utf8, types.PositionEncodingKind.Utf16,
                      types.PositionEncodingKind.Utf32)
TEXT = "s = '\U0001f600'; total = 0\nprint(total)\n"
"""The emoji is 1 string index, 2 UTF-16 units and 4 UTF-8 bytes."""


@pytest.mark.parametrize("encoding, start, end", [(UTF16, 10, 15), (UTF8, 12, 17), (UTF32, 9, 14)])
def test_the_range_is_in_the_clients_units(encoding: str, start: int, end: int) -> None:
    doc = OpenDocument("file:///w/a.py", TEXT, 1, "python", encoding)
    column = TEXT.index("total")
    rng = lsp_range(doc, Replacement(0, column, 0, column + 5, "count"))
    assert rng == types.Range(types.Position(0, start), types.Position(0, end))
    assert lsp_range(doc, Replacement(1, 6, 1, 11, "count")) == types.Range(types.Position(1, 6),
                                                                            types.Position(1, 11))


def test_a_range_past_the_last_line_ends_at_the_end_of_the_document() -> None:
    doc = OpenDocument("file:///w/a.py", "a\nb", 1, "python", UTF16)
    assert lsp_range(doc, Replacement(1, 1, 2, 0, "c\n")) == types.Range(types.Position(1, 1), types.Position(1, 1))


def test_the_result_is_the_contracts_json() -> None:
    rng = types.Range(types.Position(3, 4), types.Position(3, 9))
    suggestion = Suggestion(rng, "count", "follows your edit at line 2", NextEditResult(None, "edit"))
    assert suggestion.to_json() == {"range": {"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 9}},
                                    "newText": "count", "cause": "follows your edit at line 2"}


def test_near_the_cursor() -> None:
    def at(line: int) -> Suggestion:
        rng = types.Range(types.Position(line, 0), types.Position(line, 1))
        return Suggestion(rng, "x", "", NextEditResult(None, "edit"))

    cursor = types.Position(10, 4)
    assert near_cursor(at(13), cursor) and near_cursor(at(7), cursor)
    assert not near_cursor(at(14), cursor) and not near_cursor(at(6), cursor)


def test_params() -> None:
    uri, position = parse({"textDocument": {"uri": "file:///w/a.py"}, "position": {"line": 2, "character": 5}})
    assert (uri, position) == ("file:///w/a.py", types.Position(2, 5))
    for bad in [None, {}, {"textDocument": {"uri": 1}, "position": {"line": 0, "character": 0}},
                {"textDocument": {"uri": "u"}, "position": {"line": -1, "character": 0}},
                {"textDocument": {"uri": "u"}, "position": {"line": True, "character": 0}},
                {"textDocument": {"uri": "u"}, "position": [0, 0]}]:
        with pytest.raises(JsonRpcInvalidParams):
            parse(bad)


def test_an_open_documents_incremental_changes_become_one_edit() -> None:
    # As features/documents.py feeds it: each didChange's snapshot of the buffer's lines.
    doc = OpenDocument("file:///w/a.py", TEXT, 1, "python", UTF16)
    history = EditHistory()
    history.open(doc.uri, "a.py", doc.snapshot())
    start = TEXT.index("total")
    for i, ch in enumerate("count"):  # "total" selected and typed over, letter by letter
        rng = (types.Range(types.Position(0, 10), types.Position(0, 15)) if i == 0 else  # UTF-16 units
               types.Range(types.Position(0, 10 + i), types.Position(0, 10 + i)))
        doc.apply(types.TextDocumentContentChangePartial(range=rng, text=ch))
        history.change(doc.uri, doc.snapshot())
    assert doc.source.startswith(TEXT[:start] + "count = 0")
    assert history.diffs(8) == ["--- a/a.py\n+++ b/a.py\n@@ -1,2 +1,2 @@\n-s = '\U0001f600'; total = 0\n"
                                "+s = '\U0001f600'; count = 0\n print(total)\n"]
