"""Regenerate the README's images from the last ``make demo`` (synthetic playlists only).

    make demo && .venv/bin/python docs/img/make_images.py

- ``docs/img/quality.png``: the demo's evaluate step, every model's NDCG and R-precision per
  challenge category and warm vs cold (:func:`llarapp.evaluation.charts.quality_chart`);
- ``docs/img/page.png``: the page of ``llarapp serve`` on the model the demo trained, in
  headless Debian chromium (Playwright): a title, one seed picked from the catalogue, the
  recommendations, one like.

Refuses a demo run on other data than the synthetic playlists it generates (``make demo
DATA=...``): no row of a real dataset goes into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from llarapp.evaluation.charts import quality_chart
from llarapp.serving.client import start_server, stop_server, wait_ready

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def demo_outputs(run: Path) -> dict:
    """The last demo run's outputs; SystemExit unless it ran on the synthetic playlists."""
    if not run.is_file():
        raise SystemExit(f"{run} not found: run `make demo` first")
    last = json.loads(run.read_text())
    data = str(last["arguments"].get("data_uri", ""))
    if Path(data).name != "synth":
        raise SystemExit(
            f"the demo ran on {data}, not on its synthetic playlists: run `make demo` without "
            "DATA= (the README's images never show rows of a real dataset)"
        )
    if not last["ok"]:
        raise SystemExit(f"the demo run in {run} failed; rerun `make demo`")
    return last["outputs"]


def screenshot(model: str, out: Path, chromium: str, title: str, seed_query: str) -> Path:
    """The page on ``model``: ``title``, the first track ``seed_query`` finds as a seed, the
    recommendations and a like on the first, as a PNG."""
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory(prefix="llarapp-page-") as tmp:
        proc, url = start_server(model, None, "--events", f"{tmp}/events.db")
        try:
            wait_ready(url, proc)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 900, "height": 760})
                page.goto(url + "/")
                page.locator("#title").fill(title)
                page.locator("#seed-search").press_sequentially(seed_query)
                page.locator("#suggestions li").first.click()
                page.locator("#k").fill("8")
                page.locator("#recommend").click()
                rows = page.locator("#results tbody tr")
                expect(rows).to_have_count(8)
                rows.first.locator("button.like").click()
                expect(rows.first).to_have_attribute("data-feedback", "liked")
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            stop_server(proc)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", default="runs/demo/last_run.json", help="the demo's run record")
    p.add_argument("--out", default=str(HERE), help="where the PNGs go (default: docs/img)")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Debian's chromium")
    p.add_argument("--title", default="summer road trip")
    p.add_argument("--seed", default="love", help="words the seed picker searches for")
    args = p.parse_args(argv)
    outputs = demo_outputs(Path(args.run))
    out = Path(args.out)
    evaluation = json.loads((Path(outputs["evaluation"]) / "evaluation.json").read_text())
    title = "make demo (synthetic playlists): LLaRA++ vs baselines on the test cases"
    print("wrote", quality_chart(evaluation, out / "quality.png", title))
    page = screenshot(outputs["model"], out / "page.png", args.chromium, args.title, args.seed)
    print("wrote", page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
