"""Relative links in Markdown: every one must lead to a file that exists and, with `#anchor`, to a heading there.

Anchors are checked as both GitHub and MkDocs spell them, so a link works on GitHub and in the site alike.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((no, line))
    return out


def github_slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def mkdocs_slug(heading: str) -> str:
    """Python-Markdown's toc.slugify, as MkDocs uses it by default."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> tuple[set[str], set[str]]:
    """The heading anchors of a Markdown file, as GitHub and as MkDocs make them."""
    github, mkdocs = set(), set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(2))  # a link in a heading keeps its text
        slug = github_slug(title)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        github.add(slug if n == 0 else f"{slug}-{n}")
        mkdocs.add(mkdocs_slug(title))
    return github, mkdocs


def broken_links(path: Path, root: Path) -> list[str]:
    """One line per relative link of `path` that leads nowhere (outside `root` counts as nowhere)."""
    problems = []
    for no, line in prose_lines(path.read_text(encoding="utf-8")):
        for m in LINK.finditer(INLINE_CODE.sub("", line)):  # a link in code is not a link
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
                continue
            where = f"{path.relative_to(root)}:{no}: {target}"
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path.resolve()
            if not dest.is_relative_to(root.resolve()):
                problems.append(f"{where}: leads outside {root}")
            elif not dest.is_file():
                problems.append(f"{where}: no such file")
            elif anchor:
                if dest.suffix != ".md":
                    problems.append(f"{where}: an anchor into a file that is not Markdown")
                    continue
                github, mkdocs = anchors(dest)
                if anchor not in github or anchor not in mkdocs:
                    missing = [name for name, found in (("GitHub", github), ("MkDocs", mkdocs)) if anchor not in found]
                    problems.append(f"{where}: no heading with this anchor on {' or '.join(missing)}")
    return problems
