"""issue 24 item 4: the docs an operator reads hold together. Every relative link in README.md and
docs/*.md names a file of this repository (docs/ pages link `../bench/...`, the README `docs/...`),
and every docs/ page is reachable from the README's list."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def relative_links(page: Path) -> list[str]:
    """The page's link targets outside code (a link inside backticks is text), without web links
    and in-page anchors, fragment dropped."""
    text = CODE.sub("", FENCE.sub("", page.read_text()))
    targets = (m.group(1).split("#", 1)[0] for m in LINK.finditer(text))
    return [t for t in targets if t and not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def dead_links(page: Path) -> list[str]:
    return [t for t in relative_links(page) if not (page.parent / t).exists()]


def test_links_are_found_and_code_is_not_a_link(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[a](x.md) [b](https://example.org/y) [c](#z) `[d](e.md)`\n```\n[f](g.md)\n```\n[h](i.md#k)\n")
    assert relative_links(page) == ["x.md", "i.md"]
    (tmp_path / "x.md").write_text("")
    assert dead_links(page) == ["i.md"]


def test_every_relative_link_in_the_docs_resolves():
    dead = {str(p.relative_to(ROOT)): d for p in PAGES if (d := dead_links(p))}
    assert not dead, f"dead relative links: {dead}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t).resolve() for t in relative_links(ROOT / "README.md")}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs/ pages the README's Reference list does not link: {orphans}"
