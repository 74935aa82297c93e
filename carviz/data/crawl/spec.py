"""What a crawl is asked to do: the classes with their queries and targets, the engine, filters and politeness."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from carviz.data.crawl.engines import SearchEngine, make_engine
from carviz.data.importer import safe_class_name


@dataclass(frozen=True)
class ClassRequest:
    """One class to collect: its folder name, the search queries to run in order, how many images to keep."""

    name: str
    queries: tuple[str, ...]
    target: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", safe_class_name(self.name))
        queries = (self.queries,) if isinstance(self.queries, str) else tuple(self.queries)
        queries = tuple(q.strip() for q in queries if isinstance(q, str) and q.strip())
        if not queries:
            raise ValueError(f"class {self.name!r} needs at least one search query")
        object.__setattr__(self, "queries", queries)
        if not isinstance(self.target, int) or not 1 <= self.target <= 100_000:
            raise ValueError(f"class {self.name!r}: target must be an integer in 1..100000, got {self.target!r}")


@dataclass(frozen=True)
class CrawlSpec:
    """A crawl request (saved as .crawl/spec.json): engine, classes, filters and politeness settings."""

    classes: tuple[ClassRequest, ...]
    engine: str = "bing"
    engine_options: dict[str, Any] = field(default_factory=dict)  # GenericEngine arguments
    min_side: int = 100  # pixels; smaller images are dropped
    max_bytes: int = 15 << 20  # per download; aborted past it
    delay: float = 1.0  # seconds between two downloads
    timeout: float = 15.0  # seconds allowed for one download
    near_threshold: int = 6  # phash Hamming distance counted as the same picture
    scroll_pause: float = 1.5  # seconds to wait for new results after scrolling / "more"
    stall_rounds: int = 3  # scrolls without new results before moving to the next query
    max_rounds: int = 60  # scrolls per query at most
    thumbnail_fallback: bool = True  # try the thumbnail when the full-size link is broken
    page_timeout: float = 30.0  # seconds for a results page to load
    audit_when_done: bool = False  # start an audit of the dataset when the crawl finishes (not when stopped)

    def __post_init__(self) -> None:
        classes = tuple(c if isinstance(c, ClassRequest) else ClassRequest(**c) for c in self.classes)
        if not classes:
            raise ValueError("a crawl needs at least one class")
        names = [c.name for c in classes]
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "engine_options", dict(self.engine_options or {}))
        make_engine(self.engine, self.engine_options)  # validates engine and options
        checks = {
            "min_side": (1, 100_000), "max_bytes": (1, 1 << 32), "delay": (0, 3600), "timeout": (0.1, 3600),
            "near_threshold": (0, 64), "scroll_pause": (0, 600), "stall_rounds": (1, 1000),
            "max_rounds": (0, 100_000), "page_timeout": (1, 3600),
        }
        for name, (low, high) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in {low}..{high}, got {value!r}")

    def make_engine(self) -> SearchEngine:
        return make_engine(self.engine, self.engine_options)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = [{"name": c.name, "queries": list(c.queries), "target": c.target} for c in self.classes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrawlSpec:
        if not isinstance(data, dict):
            raise ValueError(f"bad crawl spec: expected an object, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown crawl spec keys: {', '.join(sorted(unknown))}")
        try:
            return cls(**{**data, "classes": tuple(ClassRequest(**c) for c in data.get("classes", ()))})
        except TypeError as exc:  # a class entry with missing or unknown keys
            raise ValueError(f"bad crawl spec: {exc}") from None
