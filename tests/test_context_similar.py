"""slm_lsp.context.sources.similar: the per-file window cache (the similar and same_file sources
read it on every request)."""

from __future__ import annotations

from slm_lsp.context.sources import similar


def test_a_full_window_cache_keeps_the_files_in_use(monkeypatch):
    cut: list[str] = []
    real_tokens = similar.tokens

    def counting_tokens(text: str) -> set[str]:
        cut.append(text)
        return real_tokens(text)

    monkeypatch.setattr(similar, "tokens", counting_tokens)
    similar._windows.cache_clear()
    hot = "".join(f"hot_name_{i} = compute({i})\n" for i in range(30))
    for i in range(1500):  # many files pass through; the one being edited is asked again and again
        similar._windows(f"pkg/m{i}.py", f"cold_{i} = 1\n", similar.WINDOW, similar.STEP)
        if i % 100 == 0:
            similar._windows("pkg/hot.py", hot, similar.WINDOW, similar.STEP)
    assert sum("hot_name_0 " in c for c in cut) == 1  # its windows were cut once
