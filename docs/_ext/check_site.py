"""Check the built site: internal links resolve and no reST markup leaked into the pages.

Run by `make docs` after the HTML build: ``python docs/_ext/check_site.py site``. Sphinx's
nitpicky mode catches unresolved cross-references while it builds; this catches what it cannot
see from inside: a relative ``href``/``src`` to a file or ``#anchor`` that is not in the built
site (a hand-written link in a Markdown page, a moved page), and reST that was rendered as text
(``:class:`Foo```, ``.. math::``), which is how a docstring role outside a supported context
shows up. Exits 1 with one line per problem. External links (http...) are not followed: there
is no network here.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Text that is reST syntax, not prose: a role (:class:`x`, :py:func:`x`) or a directive line.
LEAKED = [
    re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|obj|data|exc|math|ref|doc|term):`"),
    re.compile(r"(?m)^\s*\.\. [a-z][\w-]*::"),
]
SKIP_TEXT_IN = {"script", "style", "pre", "code"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name"):
            if values.get(key):
                self.ids.add(str(values[key]))
        for key in ("href", "src"):
            if values.get(key):
                self.links.append(str(values[key]))
        if tag in SKIP_TEXT_IN:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIP_TEXT_IN and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def check(site: Path) -> list[str]:
    pages: dict[Path, _Page] = {}
    for path in sorted(site.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = page
    if not pages:
        return [f"{site}: no HTML pages (was the site built?)"]
    problems = []
    for path, page in pages.items():
        rel = path.relative_to(site.resolve())
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith(("//", "mailto:", "data:", "javascript:")):
                continue  # external: not checked (no network)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if not target.exists():
                problems.append(f"{rel}: broken link {link!r} (no file {target.name})")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else set()
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{rel}: broken link {link!r} (no anchor on that page)")
        text = "".join(page.text)
        for pattern in LEAKED:
            for match in pattern.finditer(text):
                around = text[max(0, match.start() - 40) : match.end() + 40].replace("\n", " ")
                problems.append(f"{rel}: reST markup left as text: ...{around.strip()}...")
    return problems


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "site")
    problems = check(site)
    for line in problems:
        print(line)
    print(f"check_site: {len(problems)} problem(s) in {site}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
