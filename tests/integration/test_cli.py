"""`python -m carviz …`: demo data, layers, runs, import, trash/restore, and crawl jobs against the fake image site."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from carviz.data.crawl import job as crawl
from carviz.cli import main
from carviz.core.jobs import Status as CrawlStatus

try:
    from .test_crawl import _browser_or_skip, site  # noqa: F401 - the fake image-search site fixture
except ImportError:  # tests/ is not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_crawl import _browser_or_skip, site  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def jpeg(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


def test_demo_data_layers_and_runs(carviz_home: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "demo-data", "--per-class", "3", "--size", "48")
    assert code == 0 and "sedan 3" in out and "bus 3" in out
    assert len(list((carviz_home / "data" / "demo" / "suv").glob("*.jpg"))) == 3

    code, out, _ = run_cli(capsys, "layers", "small_cnn")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["idx", "name", "type"]
    assert lines[1].split()[0] == "1" and any("conv" in line.split()[-1:] or " conv" in line for line in lines[1:])
    code, _, err = run_cli(capsys, "layers", "no_such_net")
    assert code == 2 and "unknown backbone" in err

    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and out.startswith("no runs in")
    # the real entry point, in a fresh interpreter
    done = subprocess.run([sys.executable, "-m", "carviz", "runs", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 0 and json.loads(done.stdout) == []


def _zip(members: dict[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out


def test_import_trash_and_restore(carviz_home: Path, tmp_path: Path, capsys) -> None:
    archive = tmp_path / "pets.zip"
    archive.write_bytes(_zip({"cats/a.jpg": jpeg("red"), "cats/b.jpg": jpeg("green"), "dogs/c.jpg": jpeg("blue"),
                              "../up.jpg": jpeg("black"), "dogs/readme.txt": b"hi"}).getvalue())
    code, out, _ = run_cli(capsys, "import", "pets", str(archive))
    assert code == 0, out
    assert "Added 3 images (cats 2, dogs 1); dropped 2." in out
    assert "dropped ../up.jpg:" in out and "dropped dogs/readme.txt:" in out
    pets = carviz_home / "data" / "pets"
    assert sorted(p.name for p in (pets / "cats").iterdir()) == ["a.jpg", "b.jpg"]

    folder = tmp_path / "more" / "birds"
    folder.mkdir(parents=True)
    (folder / "d.jpg").write_bytes(jpeg("white"))
    code, out, _ = run_cli(capsys, "import", "pets", str(folder.parent))
    assert code == 0 and "Added 1 image (birds 1)" in out and (pets / "birds" / "d.jpg").is_file()

    (tmp_path / "notes.txt").write_text("not a zip")
    code, _, err = run_cli(capsys, "import", "pets", str(tmp_path / "notes.txt"))
    assert code == 2 and "neither a folder nor a zip" in err
    code, _, err = run_cli(capsys, "import", "a/b", str(archive))  # a name is one folder under data/
    assert code == 2 and "path separator" in err

    code, out, _ = run_cli(capsys, "trash", "pets", "cats", "a.jpg", "b.jpg")
    assert code == 0 and "2 image(s) moved" in out
    assert not (pets / "cats" / "a.jpg").exists() and (pets / ".trash" / "cats" / "a.jpg").is_file()
    code, _, err = run_cli(capsys, "trash", "pets", "cats", "missing.jpg")
    assert code == 2 and "missing.jpg" in err
    code, _, err = run_cli(capsys, "trash", "pets", "cats", "../dogs/c.jpg")
    assert code == 2 and (pets / "dogs" / "c.jpg").is_file()

    code, out, _ = run_cli(capsys, "restore", "pets", "--list")
    assert code == 0 and "cats/a.jpg  (from cats/a.jpg" in out and "2 image(s) in the trash" in out
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", out)  # local times, not raw ISO timestamps
    code, out, _ = run_cli(capsys, "restore", "pets", "cats/b.jpg")
    assert code == 0 and "restored cats/b.jpg" in out and (pets / "cats" / "b.jpg").is_file()
    code, _, err = run_cli(capsys, "restore", "pets", "cats/nope.jpg")
    assert code == 2 and "not in the trash" in err
    code, out, _ = run_cli(capsys, "restore", "pets")  # everything left
    assert code == 0 and "1 image(s) restored" in out
    assert sorted(p.name for p in (pets / "cats").iterdir()) == ["a.jpg", "b.jpg"]


def test_crawl_errors_need_no_browser(carviz_home: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "crawl", "cars", "--class", "sedan=", "--target", "3")
    assert code == 2 and "at least one search query" in err
    code, _, err = run_cli(capsys, "crawl", "cars", "--class", "sedan=a", "--engine", "generic")
    assert code == 2 and "needs search_url_template" in err
    code, _, err = run_cli(capsys, "crawl", "cars", "--class", "a=x", "--engine-option", "colour=red")
    assert code == 2 and "unknown engine option" in err
    assert not (carviz_home / "data" / "cars").exists()
    code, _, err = run_cli(capsys, "crawl-status", "cars")
    assert code == 2 and "not found" in err


def test_crawl_status_stop_and_resume_against_the_fake_site(site, carviz_home: Path, capsys) -> None:
    _browser_or_skip()
    args = ["crawl", "fake cars", "--class", "gamma=gamma", "--target", "3", "--engine", "generic",
            "--engine-option", f"search_url_template={site.base_url}/search?q={{query}}",
            "--engine-option", "thumb_selector=img.thumb", "--engine-option", "full_link_selector=a.full",
            "--engine-option", "more_button_selector=#more", "--min-side", "64", "--delay", "0.3"]
    dataset = carviz_home / "data" / "fake cars"
    before = len(site.crawler_gets())
    try:
        code, out, _ = run_cli(capsys, *args)
        assert code == 0 and "started in the background" in out
        code, _, err = run_cli(capsys, *args)  # Chromium takes a while to start: still active
        assert code == 2 and "already running" in err
        code, out, _ = run_cli(capsys, "crawl-status", "fake cars")
        assert code == 0 and out.splitlines()[-1] in ("status: queued", "status: running")
        assert "gamma" in out and "/3" in out

        code, out, _ = run_cli(capsys, "crawl-stop", "fake cars", "--timeout", "20")
        assert code == 0 and out.splitlines()[-1] == "status: stopped", out
        code, out, _ = run_cli(capsys, "crawl-stop", "fake cars")
        assert code == 0 and "no crawl is running" in out

        code, out, _ = run_cli(capsys, *args, "--wait")  # resumes
        assert code == 0, out
        assert out.splitlines()[-1] == "status: succeeded" and "3/3" in out
        code, out, _ = run_cli(capsys, "crawl-status", "fake cars", "--json")
        status = json.loads(out)
        assert status["status"] == "succeeded" and status["classes"]["gamma"]["saved"] == 3
    finally:
        if crawl.read_crawl(dataset).active:
            crawl.stop_crawl(dataset, timeout=5)
    assert len(list((dataset / "gamma").glob("*.jpg"))) == 3
    gets = site.crawler_gets()[before:]
    assert len(gets) == len(set(gets)) == 3, "an image was downloaded twice across stop and resume"
    assert crawl.read_crawl(dataset).status == CrawlStatus.SUCCEEDED
