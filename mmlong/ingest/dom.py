"""A webpage's content as blocks in DOM order: headings (with their level), paragraphs, list
items (each text once: a parent item without its nested list), code blocks (line breaks kept),
tables (rows of "cell | cell"), and every image where it stands (inside lists, tables, links
and paragraphs too) with its alt text and caption.

The main-content region is the page's own marker (`<main>`, `role=main`, one `<article>`,
`#content` ...), else the smallest element holding what trafilatura keeps as main content,
else the body; navigation, headers, footers, menus and scripts inside it are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BLOCK = {"address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details", "div", "dl", "dt",
         "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
         "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"}
SKIP = {"script", "style", "noscript", "template", "iframe", "object", "embed", "form", "button", "select", "svg",
        "canvas", "head", "input", "textarea"}
CHROME_TAGS = {"nav", "header", "footer", "aside"}
CHROME = re.compile(r"(?:^|[\s_-])(nav|navbar|navheader|navfooter|navigation|docnav|breadcrumbs?|menu|banner|skip|toc|footer|header|"
                    r"masthead|related|share|social|cookie)(?:$|[\s_-])", re.I)
MAIN = ("main", "[role=main]", "#content", "#main-content", ".main-content", "#main", "div.body", "div.document")


@dataclass
class Block:
    """One piece of content: text (with its tag, and a heading's level) or an image."""

    tag: str
    text: str = ""
    src: str = ""
    alt: str = ""
    caption: str = ""
    level: int | None = None
    shape: str = ""
    """The text with each link's text as "<a>" when links make a third of it or more and words
    of its own stand around them ("Next: <a> / Previous: <a>"), else the text: what repeats from
    page to page in a site's navigation."""

    def __post_init__(self) -> None:
        self.shape = self.shape or self.text


@dataclass
class _Walk:
    blocks: list[Block] = field(default_factory=list)
    buffer: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: ["p"])
    shape: list[str] = field(default_factory=list)
    links: int = 0
    """How many links the walk is inside."""

    def text(self, text: str) -> None:
        self.buffer.append(text)
        if not self.links:
            self.shape.append(text)

    def flush(self) -> None:
        text = " ".join("".join(self.buffer).split())
        outside = " ".join("".join(self.shape).split())
        self.buffer.clear()
        self.shape.clear()
        if text:
            words = outside.replace("<a>", "")
            linked = len(text) - len(words)  # words of its own ("Next:") and links for a third or more
            shaped = 3 * linked >= len(text) and re.search(r"[^\W\d_]{2,}", words)
            self.blocks.append(Block(self.tags[-1], text, shape=outside if shaped else text))


def _is_chrome(node, main_only: bool) -> bool:
    """Navigation, headers, footers, menus: by tag always, by class or id in main-content mode."""
    if node.tag in CHROME_TAGS:
        return True
    if not main_only:
        return False
    attrs = node.attributes
    return bool(CHROME.search(f"{attrs.get('class') or ''} {attrs.get('id') or ''} {attrs.get('role') or ''}"))


def _text(node) -> str:
    return " ".join(node.text(separator=" ").split())


def _caption(img) -> str:
    """The caption of an image: the <figcaption> of its <figure>, a DocBook figure's title, or
    the <caption> of its table."""
    node = img.parent
    while node is not None and node.tag != "body":
        if node.tag == "figure":
            cap = node.css_first("figcaption")
            return _text(cap) if cap is not None else ""
        if node.tag == "div" and _figure_div(node):
            title = node.css_first(".title, .caption")
            return _text(title) if title is not None else ""
        node = node.parent
    return ""


def _figure_div(node) -> bool:
    """A DocBook (or similar) figure wrapper: class "figure" or "informalfigure"."""
    return bool({"figure", "informalfigure"} & set((node.attributes.get("class") or "").split()))


def _is_caption(node) -> bool:
    """Caption elements, emitted with their image rather than as text of their own."""
    if node.tag == "figcaption":
        return True
    cls = (node.attributes.get("class") or "").split()
    return node.tag == "p" and ("title" in cls or "caption" in cls) and node.parent is not None and _figure_div(node.parent)


def _table(node, w: _Walk, main_only: bool) -> None:
    rows = []
    images = []
    for tr in node.css("tr"):
        cells = [" ".join(c.text(separator=" ").split()) for c in tr.css("th, td")]
        if any(cells):
            rows.append(" | ".join(cells))
    for img in node.css("img"):
        images.append(img)
    cap = node.css_first("caption")
    if cap is not None and _text(cap):
        w.blocks.append(Block("caption", _text(cap)))
    if rows:
        w.blocks.append(Block("table", "\n".join(rows)))
    for img in images:
        _image(img, w)


def _image(node, w: _Walk) -> None:
    w.flush()
    attrs = node.attributes
    src = attrs.get("src") or attrs.get("data-src") or ""
    w.blocks.append(Block("img", src=src, alt=(attrs.get("alt") or "").strip(), caption=_caption(node)))


def _walk(root, w: _Walk, main_only: bool) -> None:
    """Blocks of `root`'s subtree into `w`, depth first with a stack of its own (markup nested
    thousands deep is no recursion limit)."""
    stack = [(root.iter(include_text=True), False, False)]  # children left; leaving them ends a block, a link
    while stack:
        children, ends_block, link = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if ends_block:
                w.flush()
                w.tags.pop()
            w.links -= link
            continue
        tag = child.tag
        if tag == "-text":
            w.text(child.text_content or "")
        elif tag in SKIP or tag.startswith("#") or _is_chrome(child, main_only):
            continue
        elif tag == "br":
            w.text(" ")
        elif tag == "img":
            _image(child, w)
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            w.flush()
            text = _text(child)
            if text:
                w.blocks.append(Block(tag, text, level=int(tag[1])))
            for img in child.css("img"):
                _image(img, w)
        elif tag == "pre":
            w.flush()
            text = child.text(deep=True, separator="").strip("\n")
            if text.strip():
                w.blocks.append(Block("pre", text))
        elif tag == "table":
            w.flush()
            _table(child, w, main_only)
        elif _is_caption(child):
            continue  # goes with its image
        elif tag in BLOCK:
            w.flush()
            w.tags.append(tag if tag in ("li", "dt", "dd", "blockquote", "td", "th") else w.tags[-1] if tag == "div" else tag)
            stack.append((child.iter(include_text=True), True, False))
        else:  # inline: its text joins the block it stands in
            if tag == "a" and not w.links:
                w.shape.append("<a>")
            w.links += tag == "a"
            stack.append((child.iter(include_text=True), False, tag == "a"))


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def main_region(tree, html: str):
    """The element holding the page's main content (see the module docstring)."""
    for selector in MAIN:
        found = tree.css(selector)
        if len(found) == 1:
            return found[0]
    articles = tree.css("article")
    if len(articles) == 1:
        return articles[0]
    try:
        import trafilatura

        kept = trafilatura.extract(html, include_tables=True, favor_recall=True, deduplicate=False) or ""
    except Exception:  # the extractor may fail on odd markup: the body, then
        kept = ""
    body = tree.body
    if not kept or body is None:
        return body
    whole = _norm(kept)
    hits = [n for n in body.css("p, li, div, td, dd, pre, h1, h2, h3, h4, h5, h6")
            if len(t := _norm(n.text(deep=False))) >= 30 and t in whole]
    if len(hits) < 3:
        return body
    chains = []
    for n in hits:
        chain, node = [], n
        while node is not None:
            chain.append(node.mem_id)
            node = node.parent
        chains.append(chain[::-1])
    common = None
    for depth in range(min(map(len, chains))):
        ids = {c[depth] for c in chains}
        if len(ids) != 1:
            break
        common = chains[0][depth]
    node = hits[0]
    while node is not None and node.mem_id != common:
        node = node.parent
    return node if node is not None and node.tag not in ("html", "#document") else body


def blocks(html: str, main_only: bool = True, outside: list[str] | None = None) -> list[Block]:
    """The page's blocks in DOM order: its main-content region (`main_only`), else the body.
    `outside` gets the sources of the body's images that the region leaves out."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    region = main_region(tree, html) if main_only else tree.body
    if region is None:
        return []
    w = _Walk()
    if region.tag == "img":
        _image(region, w)
    else:
        _walk(region, w, main_only)
    w.flush()
    if outside is not None and tree.body is not None and region is not tree.body:
        inside = {img.mem_id for img in ([region] if region.tag == "img" else region.css("img"))}
        outside += [img.attributes.get("src") or "" for img in tree.body.css("img") if img.mem_id not in inside]
    return w.blocks
