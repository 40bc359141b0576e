"""The README and docs/: every relative link resolves, every page is in the site's nav, the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

from docs_links import anchors, broken_links

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 160


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_resolves() -> None:
    files = markdown_files()
    assert len(files) > 20, files  # the docs are there to check
    problems = [p for f in files for p in broken_links(f, ROOT)]
    assert not problems, "\n".join(problems)


def test_docs_links_stay_inside_docs() -> None:
    """A page linking out of docs/ works on GitHub but not in the site."""
    problems = [p for f in sorted((ROOT / "docs").rglob("*.md")) for p in broken_links(f, ROOT / "docs")]
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move detail into docs/"


def test_every_page_is_in_the_nav() -> None:
    nav = set(re.findall(r"^\s*-\s+(?:[^:\n]+:\s+)?(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages == nav, f"not in nav: {sorted(pages - nav)}; in nav, no file: {sorted(nav - pages)}"


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Two — words\n")
    (tmp_path / "README.md").write_text(
        "# R\n\n[ok](docs/a.md) [ok](docs/a.md#a-page) [missing](docs/b.md) [anchor](docs/a.md#nope)\n"
        "[out](../x.md) `[code](docs/none.md)` [web](https://example.org/x.md) [dash](docs/a.md#two-words)\n"
        "```\n[fenced](docs/none.md)\n```\n"
    )
    problems = broken_links(tmp_path / "README.md", tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/b.md: no such file",
        "docs/a.md#nope: no heading with this anchor on GitHub or MkDocs",
        "../x.md: leads outside " + str(tmp_path),
        "docs/a.md#two-words: no heading with this anchor on GitHub",  # GitHub keeps both dashes: two--words
    ]
    assert anchors(tmp_path / "docs" / "a.md") == ({"a-page", "two--words"}, {"a-page", "two-words"})
