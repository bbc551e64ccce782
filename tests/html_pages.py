"""Reading objrec's HTML pages in tests: their images, headings, cells and external links."""

import base64
import html.parser
import pathlib


class PageParts(html.parser.HTMLParser):
    """The images (data URIs), headings and table cells of a page, and any external link."""

    def __init__(self):
        super().__init__()
        self.images, self.headings, self.cells, self.external = [], [], [], []
        self._tag = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag = tag
        if tag == "img":
            self.images.append((attrs["src"], attrs.get("alt", "")))
        for name in ("src", "href"):
            if attrs.get(name) and not attrs[name].startswith("data:"):
                self.external.append(attrs[name])

    def handle_data(self, data):
        if self._tag in ("h1", "h2", "h3"):
            self.headings.append(data)
        elif self._tag in ("td", "th"):
            self.cells.append(data)


def parse(path: pathlib.Path) -> PageParts:
    parts = PageParts()
    parts.feed(path.read_text())
    return parts


def decoded(src: str) -> bytes:
    return base64.b64decode(src.split(",", 1)[1])
