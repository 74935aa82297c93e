"""A fake image-search site on 127.0.0.1 for crawler tests: lazy thumbnails, infinite scroll, a "more" button."""

from __future__ import annotations

import html
import io
import json
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import imagehash
from PIL import Image, ImageDraw

# a 1x1 transparent GIF: what lazy-loading pages put in src until the real thumbnail is swapped in
PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


@dataclass
class Resource:
    """A file the site serves: body, content type, HTTP status, seconds to wait before answering."""

    body: bytes
    content_type: str = "image/jpeg"
    status: int = 200
    delay: float = 0.0


@dataclass
class Result:
    """One search result: a link to the full-size image (or none) and the thumbnail (path or data: URL)."""

    full: str | None
    thumb: str
    lazy: bool = True  # thumbnail in data-src until scrolled into view


@dataclass
class Hit:
    path: str
    user_agent: str
    time: float


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _random_picture(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(4, 7)):
        box = sorted(rng.sample(range(w), 2)), sorted(rng.sample(range(h), 2))
        xy = [box[0][0], box[1][0], box[0][1] + 8, box[1][1] + 8]
        colour = tuple(rng.randrange(256) for _ in range(3))
        shape = rng.choice(("ellipse", "rectangle", "polygon"))
        if shape == "ellipse":
            draw.ellipse(xy, fill=colour)
        elif shape == "rectangle":
            draw.rectangle(xy, fill=colour)
        else:
            draw.polygon([(rng.randrange(w), rng.randrange(h)) for _ in range(3)], fill=colour)
    return image


def distinct_pictures(count: int, seed: int, size: tuple[int, int] = (160, 120), min_distance: int = 18,
                      avoid: list[imagehash.ImageHash] | None = None) -> list[Image.Image]:
    """`count` random pictures whose perceptual hashes are at least min_distance apart (and from `avoid`)."""
    rng = random.Random(seed)
    pictures: list[Image.Image] = []
    hashes = list(avoid or [])
    while len(pictures) < count:
        picture = _random_picture(rng, size)
        h = imagehash.phash(picture)
        if all(h - other >= min_distance for other in hashes):
            pictures.append(picture)
            hashes.append(h)
    return pictures


def near_duplicate(picture: Image.Image) -> bytes:
    """The same picture slightly smaller and re-encoded at low quality (different bytes, same phash or close)."""
    w, h = picture.size
    return jpeg(picture.resize((w * 9 // 10, h * 9 // 10), Image.LANCZOS), quality=60)


def thumbnail(picture: Image.Image, width: int) -> Image.Image:
    w, h = picture.size
    return picture.resize((width, max(1, h * width // w)), Image.LANCZOS)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Fake image search: {title}</title>
<style>
 body {{ font-family: sans-serif; margin: 0 }}
 .result {{ display: block; height: 380px; margin: 8px }}
 img.thumb {{ width: 240px; height: 180px; background: #ddd }}
 #more {{ display: none; margin: 20px; font-size: 20px }}
</style></head>
<body>
<h1>Results for {title}</h1>
<div id="results">{results}</div>
<button id="more" type="button">More results</button>
<p id="end" style="display:none">No more results</p>
<script>
const query = {query_json};
const AUTO_PAGES = {auto_pages};
let page = 1, autoLeft = AUTO_PAGES, loading = false, done = {done_json};
const more = document.getElementById('more');
function swap() {{
  for (const img of document.querySelectorAll('img[data-src]')) {{
    if (img.getBoundingClientRect().top < window.innerHeight + 200) {{
      img.src = img.dataset.src; img.removeAttribute('data-src');
    }}
  }}
}}
async function load(via) {{
  if (loading || done) return;
  loading = true;
  const r = await fetch('/more?q=' + encodeURIComponent(query) + '&page=' + page + '&via=' + via);
  const data = await r.json();
  document.getElementById('results').insertAdjacentHTML('beforeend', data.html);
  page += 1;
  if (!data.more) {{ done = true; document.getElementById('end').style.display = 'block'; }}
  else if (autoLeft === 0) more.style.display = 'inline-block';
  loading = false;
  swap();
}}
window.addEventListener('scroll', () => {{
  swap();
  const nearBottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 300;
  if (!nearBottom || done || loading) return;
  if (autoLeft > 0) {{ autoLeft -= 1; load('scroll'); }}
  else more.style.display = 'inline-block';
}});
more.addEventListener('click', () => {{ more.style.display = 'none'; autoLeft = AUTO_PAGES; load('button'); }});
swap();
</script>
</body></html>
"""


def render_result(result: Result) -> str:
    thumb = html.escape(result.thumb, quote=True)
    img = (f'<img class="thumb" alt="" src="{PLACEHOLDER}" data-src="{thumb}">' if result.lazy
           else f'<img class="thumb" alt="" src="{thumb}">')
    if result.full:
        return f'<div class="result"><a class="full" href="{html.escape(result.full, quote=True)}">{img}</a></div>'
    return f'<div class="result">{img}</div>'


class FakeImageSearch:
    """The site: /search?q= (first page), /more?q=&page=&via= (JSON), and the resources; logs every request."""

    def __init__(self, results: dict[str, list[Result]], resources: dict[str, Resource],
                 page_size: int = 4, auto_pages: int = 1) -> None:
        self.results, self.resources = results, resources
        self.page_size, self.auto_pages = page_size, auto_pages
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with site._lock:
                    site.hits.append(Hit(self.path, self.headers.get("User-Agent", ""), time.time()))
                try:
                    site._answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler gave up on a slow answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _page(self, query: str, page: int) -> tuple[list[Result], bool]:
        items = self.results.get(query, [])
        start = page * self.page_size
        return items[start:start + self.page_size], start + self.page_size < len(items)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/search":
            query = params.get("q", "")
            items, has_more = self._page(query, 0)
            body = PAGE.format(
                title=html.escape(query), query_json=json.dumps(query), auto_pages=self.auto_pages,
                done_json="false" if has_more else "true", results="".join(render_result(r) for r in items),
            ).encode()
            self._send(handler, Resource(body, "text/html; charset=utf-8"))
        elif url.path == "/more":
            items, has_more = self._page(params.get("q", ""), int(params.get("page", "1")))
            body = json.dumps({"html": "".join(render_result(r) for r in items), "more": has_more}).encode()
            self._send(handler, Resource(body, "application/json"))
        elif url.path in self.resources:
            resource = self.resources[url.path]
            if resource.delay:
                time.sleep(resource.delay)
            self._send(handler, resource)
        else:
            self._send(handler, Resource(b"not found", "text/plain", status=404))

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, resource: Resource) -> None:
        handler.send_response(resource.status)
        handler.send_header("Content-Type", resource.content_type)
        handler.send_header("Content-Length", str(len(resource.body)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.wfile.write(resource.body)

    def url(self, path: str) -> str:
        return self.base_url + path

    def crawler_gets(self, marker: str = "carviz-crawler") -> list[str]:
        """Paths the crawler (not the browser) fetched, in order, by User-Agent."""
        with self._lock:
            return [h.path for h in self.hits if marker in h.user_agent]

    def paths(self) -> list[str]:
        with self._lock:
            return [h.path for h in self.hits]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
