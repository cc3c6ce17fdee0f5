"""slm_lsp.features.documents: the server's own copy of an open buffer. Incremental edits give
the text a plain string edit gives (any line ends, astral characters, clamped and inverted
ranges), lone surrogates are replaced one unit for one, snapshots do not move."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types

from slm_lsp.features.documents import MAX_DOCUMENT_CHARS, OpenDocument, column_index, sanitize, split_lines

UTF16 = types.PositionEncodingKind.Utf16


def reference_offset(text: str, line: int, units: int) -> int:
    """The string offset of an LSP position in ``text``, written the slow obvious way."""
    starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
    if line >= len(starts):
        return len(text)
    start = starts[line]
    end_match = re.compile(r"\r\n|\r|\n").search(text, start)
    end = end_match.start() if end_match else len(text)
    count = 0
    for i in range(start, end):
        if count >= units:
            return i
        count += 2 if ord(text[i]) > 0xFFFF else 1
        if count > units:  # inside a surrogate pair: its start
            return i
    return end


def doc(text: str) -> OpenDocument:
    return OpenDocument("file:///w/a.py", text, 1, "python", UTF16)


def change(sl: int, sc: int, el: int, ec: int, text: str) -> types.TextDocumentContentChangePartial:
    return types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(sl, sc), types.Position(el, ec)), text=text)


pieces = st.lists(st.sampled_from(["a", "bc", " ", "\n", "\r\n", "\r", "é", "😀", "\u2028", "x\ty", ""]),
                  max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(pieces, st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5), st.integers(0, 6), st.integers(0, 5),
                                  pieces), max_size=6))
def test_incremental_edits_match_a_plain_string_edit(initial: str, edits: list):
    d = doc(initial)
    expected = initial
    for sl, sc, el, ec, text in edits:
        a, b = reference_offset(expected, sl, sc), reference_offset(expected, el, ec)
        a, b = min(a, b), max(a, b)
        expected = expected[:a] + text + expected[b:]
        d.apply(change(sl, sc, el, ec, text))
        assert d.source == expected
        assert list(d.lines) == split_lines(expected)


def test_lines_are_lsp_lines():
    assert split_lines("") == [""]
    assert split_lines("a\r\nb\rc\nd") == ["a\r\n", "b\r", "c\n", "d"]
    assert split_lines("a\n") == ["a\n", ""]
    assert split_lines("a\u2028b\x0cc\n") == ["a\u2028b\x0cc\n", ""]  # not LSP line ends


def test_a_lone_surrogate_becomes_one_replacement_character():
    assert sanitize("ok") == "ok"
    assert sanitize("a\ud800b\udc00😀") == "a\ufffdb\ufffd😀"
    d = doc("x = '\ud83d'\ny = 1\n")
    assert d.source == "x = '\ufffd'\ny = 1\n"
    d.apply(change(0, 6, 0, 6, "\udfff!"))  # after the replaced character: UTF-16 column 6
    assert d.source == "x = '\ufffd\ufffd!'\ny = 1\n"
    d.source.encode("utf-8")


def test_columns_in_each_encoding():
    line = "é😀x"
    assert column_index(line, 1, UTF16) == 1
    assert column_index(line, 3, UTF16) == 2 and column_index(line, 2, UTF16) == 1  # inside 😀: its start
    assert column_index(line, 99, UTF16) == 3
    assert column_index(line, 2, types.PositionEncodingKind.Utf8) == 1
    assert column_index(line, 6, types.PositionEncodingKind.Utf8) == 2
    assert column_index(line, 2, types.PositionEncodingKind.Utf32) == 2


def test_a_snapshot_keeps_its_lines_while_the_buffer_changes():
    d = doc("a\nb\n")
    snap = d.snapshot()
    d.apply(change(1, 0, 1, 0, "new "))
    assert list(snap) == ["a\n", "b\n", ""]
    assert d.source == "a\nnew b\n"


def test_size_follows_edits_and_whole_replacements():
    d = doc("x" * 10)
    assert not d.too_large
    d.apply(types.TextDocumentContentChangeWholeDocument(text="y" * (MAX_DOCUMENT_CHARS + 1)))
    assert d.too_large
    d.apply(change(0, 0, 0, 10, ""))
    assert not d.too_large
