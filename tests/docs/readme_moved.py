"""Which paragraphs of a README are not yet in docs/: `python tests/docs/readme_moved.py OLD_README.md`.

For moving a README into the site without losing anything (issue 23), and for porting README paragraphs written
on other branches afterwards (`git show BRANCH:README.md > /tmp/r.md`). A block is a paragraph, a list item, a
table row or a fenced code block; it counts as moved when its text, whitespace collapsed and link targets
ignored, appears in some page of docs/ or in the README now. Headings are not counted (pages rename them).
Exit status 1 when a block is missing.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def blocks(text: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    fenced = False

    def flush() -> None:
        if current:
            out.append("\n".join(current))
            current.clear()

    for line in text.splitlines():
        if re.match(r"^\s*(```|~~~)", line):
            if fenced:
                current.append(line)
                flush()
            else:
                flush()
                current.append(line)
            fenced = not fenced
        elif fenced:
            current.append(line)
        elif not line.strip() or line.startswith("#"):
            flush()
        elif line.startswith("|") or re.match(r"^\s*([-*]|\d+\.)\s", line):
            flush()
            current.append(line)
            if line.startswith("|"):
                flush()
        else:
            current.append(line)
    flush()
    return [b for b in out if not re.fullmatch(r"\|[-| :]*\|", b.strip())]  # a table's |---| row says nothing


def normal(text: str) -> str:
    # a table cell's code with a `|`: GitHub wants `a \| b`, MkDocs <code>a &#124; b</code>; the same text
    text = re.sub(r"<code>(.*?)</code>", lambda m: "`" + html.unescape(m.group(1)).replace("|", "\\|") + "`", text)
    text = re.sub(r"\[([^\]]*)\]\([^)\s]*\)", r"\1", text)  # a link added, or its target changed: same text
    return " ".join(text.split())


def main(old: Path) -> int:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    here = " ".join(normal(p.read_text(encoding="utf-8")) for p in pages)
    found = blocks(old.read_text(encoding="utf-8"))
    missing = [b for b in found if normal(b) not in here]
    for b in missing:
        print(f"not in docs/: {b[:160]!r}")
    print(f"{len(found) - len(missing)} of {len(found)} blocks of {old} are in README.md or docs/")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
