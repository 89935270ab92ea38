"""issue 24 item 4: the docs an operator reads hold together. Every relative link in README.md and
docs/*.md names a file of this repository (docs/ pages link `../bench/...`, the README `docs/...`)
and, with `#anchor`, a heading of that page (GitHub's anchors); every docs/ page is reachable from
the README's list."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def relative_links(page: Path) -> list[tuple[str, str]]:
    """The page's link targets outside code (a link inside backticks is text), without web links:
    (path, anchor), the path "" for an in-page anchor."""
    text = CODE.sub("", FENCE.sub("", page.read_text()))
    targets = ((m.group(1) + "#").split("#")[:2] for m in LINK.finditer(text))
    return [(path, anchor) for path, anchor in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", path)]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", FENCE.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def dead_links(page: Path) -> list[str]:
    dead = []
    for path, anchor in relative_links(page):
        target = page.parent / path if path else page
        if not target.exists() or (anchor and target.suffix == ".md" and anchor not in anchors(target)):
            dead.append(f"{path}#{anchor}" if anchor else path)
    return dead


def test_links_are_found_and_code_is_not_a_link(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Top: the `page`\n[a](x.md) [b](https://example.org/y) [c](#z) `[d](e.md)`\n"
                    "```\n[f](g.md)\n```\n[h](i.md#k) [j](x.md#sub-part-b) [l](#top-the-page)\n")
    assert relative_links(page) == [("x.md", ""), ("", "z"), ("i.md", "k"), ("x.md", "sub-part-b"), ("", "top-the-page")]
    (tmp_path / "x.md").write_text("## Sub-part (b)\n")
    assert dead_links(page) == ["#z", "i.md#k"]


def test_every_relative_link_in_the_docs_resolves():
    dead = {str(p.relative_to(ROOT)): d for p in PAGES if (d := dead_links(p))}
    assert not dead, f"dead relative links: {dead}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / path).resolve() for path, _ in relative_links(ROOT / "README.md")}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs/ pages the README's Reference list does not link: {orphans}"
