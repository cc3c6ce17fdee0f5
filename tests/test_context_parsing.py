"""slm_lsp.context.parsing: tree-sitter reads the source in chunks (the GIL can change hands
between them) and the tree is the one a single read gives."""

from __future__ import annotations

from slm_lsp.context.parsing import PARSE_CHUNK, parse_tree, parser_for


def test_parse_tree_reads_the_source_in_chunks_and_gives_the_same_tree():
    source = "".join(f"def f_{i}(a):\n    return a + {i}\n\n" for i in range(3 * PARSE_CHUNK // 20)).encode()
    assert len(source) > 2 * PARSE_CHUNK
    reads: list[int] = []
    parser = parser_for("python")
    tree = parser.parse(lambda offset, _point: reads.append(offset) or source[offset:offset + PARSE_CHUNK])
    assert len(reads) > 2  # in chunks: the GIL can change hands between them
    assert str(parse_tree("python", source).root_node) == str(parser.parse(source).root_node) == str(tree.root_node)
