"""The page at ``/`` of the local server, in a real browser (headless Debian chromium, driven by
Playwright), and the catalogue search route behind its seed picker."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest

from llarapp.serving.client import get, start_server, stop_server, wait_ready
from llarapp.serving.search import MAX_LIMIT, CatalogSearch
from llarapp.serving.store import read_feedback

#: the browser: Debian's chromium package (.ci/run installs it); never a downloaded one
CHROMIUM = os.environ.get("LLARAPP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def test_search_ranks_name_prefix_then_popularity():
    uris = np.array(["u0", "u1", "u2", "u3"])
    names = np.array(["Blue Night", "Night Drive", "Into the Night", ""], dtype=object)
    artists = np.array(["Aa", "Bb", "Night Owls", "Cc"], dtype=object)
    search = CatalogSearch(uris, names, artists, pop_order=np.array([2, 0, 3, 1]))
    assert len(search) == 3  # a track without a name is not offered
    assert [t["track_uri"] for t in search.search("night")] == ["u1", "u2", "u0"]
    assert [t["track_uri"] for t in search.search("NIGHT owls")] == ["u2"]
    assert search.search("night", limit=1) == [
        {"track_uri": "u1", "track_name": "Night Drive", "artist_name": "Bb"}
    ]
    assert search.search("   ") == [] and search.search("zzz") == []


@pytest.fixture(scope="module")
def page_server(tiny, tmp_path_factory):
    """(url, events db, a validation case with a title and seeds, the model version)."""
    from llarapp.data.dataset import load_cases
    from llarapp.serving.model_uri import content_version

    data_dir, split_dir, model_dir, _ = tiny
    work = tmp_path_factory.mktemp("page")
    shutil.copytree(model_dir, work / "model")
    case = next(
        ec.case
        for ec in load_cases(data_dir, split_dir, "valid")
        if ec.case.title and len(ec.case.seeds) >= 2
    )
    proc, url = start_server(
        str(work / "model"), None, "--events", str(work / "events.db"),
        log_file=work / "server.log",
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        yield url, work / "events.db", case, content_version(work / "model")
    finally:
        stop_server(proc)


@pytest.mark.slow
@pytest.mark.integration
def test_search_route_finds_a_seed_and_limits(page_server):
    url, _, case, _ = page_server
    seed = case.seeds[0]
    q = f"{seed.track_name} {seed.artist_name}"
    status, text = get(url, "/v1/search?" + urlencode({"q": q, "limit": 5}))
    found = json.loads(text)
    assert status == 200 and found["query"] == q and 1 <= len(found["tracks"]) <= 5
    assert {"track_uri": seed.track_uri, "track_name": seed.track_name,
            "artist_name": seed.artist_name} in found["tracks"]  # fmt: skip
    status, text = get(url, "/v1/search?" + urlencode({"q": seed.artist_name[:1]}))
    assert status == 200 and len(json.loads(text)["tracks"]) <= 10


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(
    "query",
    [
        "",
        "q=",
        "q=%20%20",
        "q=a&limit=0",
        f"q=a&limit={MAX_LIMIT + 1}",
        "q=a&limit=ten",
        "q=a&order=pop",
        "q=" + "a" * 101,
    ],
)
def test_search_route_bad_query_is_422_and_server_keeps_serving(page_server, query):
    url = page_server[0]
    status, text = get(url, "/v1/search?" + query)
    assert status == 422 and "search:" in text
    assert get(url, "/v1/search?q=a&limit=1")[0] == 200


@pytest.mark.slow
@pytest.mark.integration
def test_page_in_a_browser_recommends_and_stores_a_like(page_server):
    from playwright.sync_api import expect, sync_playwright

    url, events, case, version = page_server
    assert Path(CHROMIUM).is_file(), (
        f"no browser at {CHROMIUM}: apt-get install chromium (or set LLARAPP_CHROMIUM)"
    )
    seed = case.seeds[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(url + "/")
            page.locator("#title").fill(case.title)
            page.locator("#seed-search").press_sequentially(seed.track_name)
            page.locator(f'#suggestions li[data-uri="{seed.track_uri}"]').click()
            expect(page.locator("#seeds li")).to_have_count(1)
            expect(page.locator(f'#seeds li[data-uri="{seed.track_uri}"]')).to_contain_text(
                seed.artist_name
            )
            page.locator("#k").fill("7")
            page.locator("#recommend").click()
            rows = page.locator("#results tbody tr")
            expect(rows).to_have_count(7)
            expect(page.locator("#meta")).to_contain_text(f"model version {version}")
            first = rows.first
            uri = first.get_attribute("data-uri")
            assert uri != seed.track_uri
            assert first.locator("td").nth(1).inner_text().strip()  # a track name, shown
            first.locator("button.like").click()
            expect(first).to_have_attribute("data-feedback", "liked")
            rows.nth(1).locator("button.dislike").click()
            expect(rows.nth(1)).to_have_attribute("data-feedback", "disliked")
        finally:
            browser.close()
    stored = {r["track_uri"]: r for r in read_feedback(events)}
    liked = stored[uri]
    assert liked["liked"] == 1 and liked["title"] == case.title
    assert seed.track_uri in liked["seed_uris"] and liked["model_version"] == version
    assert len(stored) == 2 and sum(r["liked"] for r in stored.values()) == 1
