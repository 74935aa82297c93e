"""Image-search page adapters for the crawler: one small class per engine (URL, selectors, scrolling)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote_plus, urlsplit


@dataclass(frozen=True)
class Candidate:
    """One search result: the full-size image URL when the page exposes it, and its thumbnail."""

    url: str | None
    thumbnail_url: str | None = None

    @property
    def key(self) -> str:
        return self.url or self.thumbnail_url or ""


# One round trip instead of one WebDriver call per element; relative URLs resolved by the page.
_CANDIDATES_JS = """
const [thumbSel, attrs, linkSel, linkAttr] = arguments;
const abs = v => { try { return new URL(v.trim(), document.baseURI).href; } catch (e) { return null; } };
const out = [];
for (const el of document.querySelectorAll(thumbSel)) {
  let thumb = null;
  for (const a of attrs) { const v = el.getAttribute(a); if (v && v.trim()) { thumb = abs(v); break; } }
  let full = null;
  if (linkSel) {
    const link = el.closest(linkSel) || (el.parentElement && el.parentElement.querySelector(linkSel));
    const v = link && link.getAttribute(linkAttr);
    if (v && v.trim()) full = abs(v);
  }
  out.push([full, thumb]);
}
return out;
"""

# Click the first visible, enabled element matching the selector; true when clicked.
_CLICK_VISIBLE_JS = """
for (const b of document.querySelectorAll(arguments[0])) {
  const r = b.getBoundingClientRect();
  if (b.offsetParent !== null && r.width > 0 && r.height > 0 && !b.disabled) { b.scrollIntoView(); b.click(); return true; }
}
return false;
"""


class SearchEngine:
    """Base adapter: subclasses set the class attributes; override candidates() for odd pages."""

    name: ClassVar[str] = "base"
    thumb_selector: str = "img"
    thumb_attributes: tuple[str, ...] = ("data-src", "src")  # lazy-load attribute first: src may be a placeholder
    full_link_selector: str | None = None  # ancestor (or sibling) element holding the full-size URL
    full_link_attribute: str = "href"
    more_button_selector: str | None = None  # a "more results" button, clicked when visible
    consent_selector: str | None = None  # a cookie banner button to dismiss once

    def search_url(self, query: str) -> str:
        raise NotImplementedError

    def prepare(self, driver: Any) -> None:
        """Called once after the results page loaded (dismiss a consent banner)."""
        if self.consent_selector:
            driver.execute_script(_CLICK_VISIBLE_JS, self.consent_selector)

    def candidates(self, driver: Any) -> list[Candidate]:
        rows = driver.execute_script(
            _CANDIDATES_JS, self.thumb_selector, list(self.thumb_attributes),
            self.full_link_selector, self.full_link_attribute,
        ) or []
        return [Candidate(full, thumb) for full, thumb in rows if full or thumb]

    def load_more(self, driver: Any) -> bool:
        """Scroll to the bottom (infinite scroll, lazy images) and press "more results" if shown; True if pressed."""
        driver.execute_script("window.scrollTo(0, document.documentElement.scrollHeight);")
        if self.more_button_selector:
            return bool(driver.execute_script(_CLICK_VISIBLE_JS, self.more_button_selector))
        return False

    def describe(self) -> dict[str, Any]:
        """The adapter's settings, for logs and the UI."""
        return {"engine": self.name}


class BingImages(SearchEngine):
    """Bing Images: each result is an <a class="iusc"> whose JSON "m" attribute holds murl (full) and turl (thumb)."""

    name = "bing"
    thumb_selector = "a.iusc"
    more_button_selector = "a.btn_seemore, .mm_seemore a"
    consent_selector = "#bnp_btn_reject"

    def search_url(self, query: str) -> str:
        return f"https://www.bing.com/images/search?q={quote_plus(query)}&form=HDRSC2&first=1"

    def candidates(self, driver: Any) -> list[Candidate]:
        rows = driver.execute_script(
            """
            const abs = v => { try { return v ? new URL(v, document.baseURI).href : null; } catch (e) { return null; } };
            const out = [];
            for (const a of document.querySelectorAll('a.iusc')) {
              try { const m = JSON.parse(a.getAttribute('m') || '{}'); out.push([abs(m.murl), abs(m.turl)]); }
              catch (e) {}
            }
            return out;
            """
        ) or []
        return [Candidate(full, thumb) for full, thumb in rows if full or thumb]


class DuckDuckGoImages(SearchEngine):
    """DuckDuckGo Images (infinite scroll, no button). The grid exposes only proxied thumbnails, so those are fetched."""

    name = "duckduckgo"
    thumb_selector = "img.tile--img__img"
    thumb_attributes = ("data-src", "src")

    def search_url(self, query: str) -> str:
        return f"https://duckduckgo.com/?q={quote_plus(query)}&iax=images&ia=images"


class GenericEngine(SearchEngine):
    """Any results page, configured by CSS selectors; search_url_template contains "{query}" (URL-encoded in)."""

    name = "generic"

    def __init__(
        self,
        search_url_template: str,
        thumb_selector: str,
        full_link_selector: str | None = None,
        full_link_attribute: str = "href",
        more_button_selector: str | None = None,
        thumb_attributes: tuple[str, ...] | list[str] = ("data-src", "src"),
        consent_selector: str | None = None,
    ) -> None:
        if "{query}" not in search_url_template:
            raise ValueError("search_url_template must contain {query}")
        if urlsplit(search_url_template).scheme not in ("http", "https"):
            raise ValueError("search_url_template must be an http(s) URL")
        if not thumb_selector:
            raise ValueError("thumb_selector is required")
        self.search_url_template = search_url_template
        self.thumb_selector = thumb_selector
        self.full_link_selector = full_link_selector or None
        self.full_link_attribute = full_link_attribute
        self.more_button_selector = more_button_selector or None
        self.thumb_attributes = tuple(thumb_attributes)
        self.consent_selector = consent_selector or None

    def search_url(self, query: str) -> str:
        return self.search_url_template.replace("{query}", quote_plus(query))

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "search_url_template": self.search_url_template,
            "thumb_selector": self.thumb_selector,
            "full_link_selector": self.full_link_selector,
            "full_link_attribute": self.full_link_attribute,
            "more_button_selector": self.more_button_selector,
            "thumb_attributes": list(self.thumb_attributes),
            "consent_selector": self.consent_selector,
        }


ENGINES: dict[str, type[SearchEngine]] = {"bing": BingImages, "duckduckgo": DuckDuckGoImages, "generic": GenericEngine}


def make_engine(name: str, options: dict[str, Any] | None = None) -> SearchEngine:
    """An adapter by name; options are the GenericEngine constructor arguments (none for the others)."""
    if name not in ENGINES:
        raise ValueError(f"unknown search engine {name!r} (known: {', '.join(ENGINES)})")
    options = dict(options or {})
    if name == "generic":
        try:
            return GenericEngine(**options)
        except TypeError as exc:
            raise ValueError(f"bad generic engine options: {exc}") from None
    if options:
        raise ValueError(f"engine {name!r} takes no options")
    return ENGINES[name]()
