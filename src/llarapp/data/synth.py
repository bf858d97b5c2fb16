"""Synthetic Spotify Million Playlist Dataset (MPD) generator.

Used by the demo and by every test: no test reads real data. The output looks like MPD
statistically and carries learnable signal, so that both text-based and behavior-based
recommenders beat a popularity baseline on it.

File contract (what :func:`generate` writes):

- One JSON file per slice, ``mpd.slice.{start}-{end}.json`` with ``end = start +
  playlists_per_slice - 1`` (also for a last, partial slice, as in MPD). Files are UTF-8,
  minified, and hold ``{"info": {"generated_on", "slice", "version"}, "playlists": [...]}``.
- ``pid`` runs 0 .. n_playlists - 1 in file order; slice ``start-end`` holds pids start..end.
- Full mode, every playlist has, in this key order: ``name``, ``collaborative`` (the strings
  ``"false"``/``"true"``), ``pid``, ``modified_at`` (unix seconds, midnight UTC),
  ``num_tracks``, ``num_albums``, ``num_followers``, ``tracks``, ``num_edits``,
  ``duration_ms``, ``num_artists`` and, for about 8% of playlists, ``description`` (last).
  Every track has ``pos`` (0-based, contiguous), ``artist_name``, ``track_uri``,
  ``artist_uri``, ``track_name``, ``album_uri``, ``duration_ms``, ``album_name``.
- Reduced mode (``reduced=True``) keeps only what the real ``mpd-dev`` set has: playlist
  ``name``, ``pid``, ``num_tracks``, ``num_followers``, ``tracks``, ``num_edits``,
  ``duration_ms``, ``num_artists`` (+ ``description`` sometimes); track ``artist_name``,
  ``track_uri``, ``track_name`` (list order is the position). For a given seed the content is
  the same as in full mode; only fields are dropped.
- URIs are ``spotify:track:``/``spotify:artist:``/``spotify:album:`` + 22 base62 characters.
- ``num_tracks`` is ``len(tracks)``; ``num_albums``/``num_artists`` count distinct URIs;
  ``duration_ms`` is the sum over the playlist's rows.
- Lengths are 5..250. About 4% of playlists contain one or two duplicated tracks (same
  ``track_uri`` twice, as real MPD has); nothing else is invalid.
- Output is deterministic for a seed: the same arguments give byte-identical files.

How the signal is built: 18 genres/scenes each have a small vocabulary; artist, album and
track names are built from their genre's words (plus a few shared generic words). Each genre
splits its artists into 3 latent sub-scenes that titles do not reveal (only behavior does).
Track popularity is Zipf-like (artist rank x track rank within the artist). A playlist draws
mostly from one genre and sub-scene (20% of playlists mix in a second, usually related
genre), favouring popular tracks and a handful of "favourite" artists (which, with the
ordering, gives artist runs), plus about 3% noise from any genre. Titles use one or two of
the genre's words or the genre's name (mixed case, sometimes with a generic word); about 15%
are generic ("my mix") and say nothing. A title's genre words are the playlist's theme: 10-35%
of its main-genre rows are tracks whose name or artist has one of them. About 7% of rows on
average are obscure tracks made for that playlist only (cold when hidden), still named from
the genre's vocabulary (40% of them with a theme word), so text can predict them.

Scale (:func:`_sizing`): up to 10,000 playlists (every test's size) the warm catalog has
about 6 tracks per playlist (at least 5,400) and lengths have median 68 (mean 79). Above that
the catalog and the cold rows grow Heaps-like (as n ** 0.65), and lengths move towards real
MPD's (median 49, mean 66) by log n, so that 1 M playlists give about MPD's 66 M rows and
2.3 M distinct tracks; output up to 10,000 playlists is unchanged. Playlist-level draws are
made 50,000 playlists at a time (``_CHUNK_PLAYLISTS``) and slices are written one at a time,
so memory holds the catalog and one chunk, whatever ``n``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["GENERIC_WORDS", "GENRES", "generate"]

# Genre -> (share of playlists, vocabulary). Vocabularies are disjoint across genres.
GENRES: dict[str, tuple[float, tuple[str, ...]]] = {
    "pop": (0.14, ("sugar", "candy", "glitter", "kiss", "crush", "sparkle", "diamond",
                   "lipstick", "confetti", "bubblegum", "sweetheart", "champagne", "mirror",
                   "pink", "starlight", "heartbeat", "radio", "popstar", "daydream", "cherry",
                   "superstar", "magic", "stereo", "pop")),
    "hip hop": (0.13, ("hustle", "block", "bounce", "flex", "trap", "money", "street", "hood",
                       "drip", "cypher", "grind", "chain", "crown", "boss", "rap", "mic",
                       "stack", "paper", "gang", "squad", "corner", "lit", "hip", "hop")),
    "country": (0.08, ("whiskey", "truck", "dirt", "road", "boots", "barn", "cowboy", "tractor",
                       "porch", "creek", "honky", "tonk", "rodeo", "pickup", "backroad",
                       "southern", "hometown", "cornfield", "saddle", "bonfire", "tailgate",
                       "moonshine", "fiddle", "country")),
    "rock": (0.09, ("guitar", "stone", "highway", "rebel", "electric", "amp", "classic", "roll",
                    "wild", "fire", "outlaw", "engine", "asphalt", "freeway", "rolling",
                    "gasoline", "arena", "anthem", "legend", "cadillac", "jukebox", "leather",
                    "revolution", "rock")),
    "edm": (0.07, ("bass", "drop", "rave", "laser", "pulse", "festival", "neon", "synth",
                   "techno", "house", "trance", "strobe", "euphoria", "circuit", "glow",
                   "electro", "club", "hyper", "sonic", "tempo", "afterparty", "dubstep",
                   "frequency", "edm")),
    "chill": (0.07, ("lofi", "mellow", "rain", "sunday", "coffee", "calm", "cozy", "breeze",
                     "drift", "haze", "slow", "sleepy", "pillow", "sunset", "dreamy", "cloud",
                     "float", "lazy", "tea", "quiet", "study", "blanket", "serene", "chill")),
    "indie": (0.06, ("bloom", "polaroid", "cardigan", "vinyl", "bicycle", "basement", "lantern",
                     "fox", "orchard", "teenage", "youth", "wildflower", "attic", "cassette",
                     "ghost", "sparrow", "kaleidoscope", "postcard", "tambourine", "alley",
                     "wallpaper", "satellite", "indie", "alternative")),
    "latin": (0.05, ("fuego", "corazón", "baila", "noche", "reggaeton", "salsa", "playa",
                     "caliente", "mami", "amor", "fiesta", "ritmo", "bachata", "cumbia", "sol",
                     "luna", "perreo", "tropical", "chica", "vida", "bésame", "loco", "mambo",
                     "latin")),
    "soul": (0.05, ("velvet", "groove", "funk", "smooth", "honey", "satin", "motown", "silk",
                    "rhythm", "blues", "soulful", "gospel", "mercy", "tender", "caramel",
                    "candlelight", "jam", "boogie", "heartache", "brother", "sister", "r&b",
                    "slowjam", "soul")),
    "jazz": (0.03, ("saxophone", "swing", "bebop", "trumpet", "bourbon", "speakeasy",
                    "cocktail", "lounge", "smoky", "bossa", "brass", "scat", "ragtime",
                    "martini", "harlem", "fedora", "improv", "bluenote", "downtown",
                    "standards", "cool", "sax", "trombone", "jazz")),
    "classical": (0.025, ("sonata", "symphony", "nocturne", "concerto", "prelude", "requiem",
                          "adagio", "allegro", "opus", "etude", "waltz", "minuet", "fugue",
                          "cello", "violin", "orchestra", "overture", "aria", "cantata",
                          "serenade", "piano", "baroque", "string", "classical")),
    "metal": (0.03, ("iron", "doom", "thunder", "skull", "blood", "steel", "inferno", "raven",
                     "chaos", "grave", "abyss", "dragon", "fury", "wrath", "serpent", "throne",
                     "legion", "black", "storm", "hammer", "crypt", "venom", "blade", "metal")),
    "punk": (0.025, ("riot", "anarchy", "safety", "pin", "spit", "garage", "loud", "fast",
                     "skate", "dropout", "suburb", "mohawk", "sneer", "broken", "slam", "pogo",
                     "misfit", "fuzz", "wreck", "trash", "rage", "boredom", "stitches",
                     "punk")),
    "folk": (0.03, ("banjo", "river", "mountain", "cabin", "harvest", "willow", "meadow",
                    "timber", "pine", "wander", "valley", "shepherd", "kettle", "hearth",
                    "mandolin", "prairie", "holler", "ballad", "northern", "campfire",
                    "woodland", "tide", "wayfarer", "folk")),
    "k-pop": (0.02, ("seoul", "idol", "hallyu", "oppa", "fandom", "comeback", "debut", "aegyo",
                     "maknae", "bias", "lightstick", "kpop", "saranghae", "hanbok", "chingu",
                     "daebak", "unnie", "hwaiting", "pastel", "galaxy", "twinkle", "mochi",
                     "strawberry", "k-pop")),
    "workout": (0.04, ("cardio", "pump", "gym", "sweat", "lift", "sprint", "hiit", "run",
                       "reps", "gains", "beast", "power", "burn", "muscle", "treadmill",
                       "squat", "bench", "motivation", "stamina", "marathon", "spin",
                       "crossfit", "adrenaline", "workout")),
    "kids": (0.015, ("puppy", "dinosaur", "bubbles", "rainbow", "teddy", "lullaby", "giggle",
                     "bunny", "playground", "crayon", "piggy", "alphabet", "sandbox", "balloon",
                     "monkey", "unicorn", "sing", "nursery", "toy", "duck", "pajama", "cookie",
                     "cartoon", "kids")),
    "christmas": (0.03, ("christmas", "snow", "sleigh", "jingle", "bells", "reindeer", "holly",
                         "mistletoe", "santa", "frosty", "winter", "merry", "noel", "carol",
                         "ornament", "chimney", "snowflake", "eggnog", "cocoa", "yuletide",
                         "gingerbread", "stocking", "tinsel", "xmas")),
}  # fmt: skip

GENERIC_WORDS: tuple[str, ...] = (
    "love", "night", "songs", "mix", "vibes", "favorites", "best", "music", "good", "time",
    "summer", "life", "feels", "day", "new", "old",
)  # fmt: skip

# Titles that say nothing about the genre.
_GENERIC_TITLES = (
    "my mix", "favorites", "songs", "good vibes", "new playlist", "music", "mix", "my songs",
    "summer", "playlist", "best songs", "all time favorites", "feels", "vibes", "love songs",
    "day", "new", "old but good", "summer mix", "night",
)  # fmt: skip

# Related genres for two-genre playlists.
_NEIGHBOURS: tuple[tuple[str, str], ...] = (
    ("pop", "k-pop"), ("pop", "edm"), ("pop", "latin"), ("pop", "soul"), ("hip hop", "soul"),
    ("hip hop", "workout"), ("hip hop", "latin"), ("country", "folk"), ("country", "rock"),
    ("rock", "metal"), ("rock", "punk"), ("rock", "indie"), ("edm", "workout"),
    ("chill", "jazz"), ("chill", "indie"), ("indie", "folk"), ("jazz", "soul"),
    ("jazz", "classical"), ("classical", "chill"), ("metal", "punk"), ("kids", "christmas"),
    ("kids", "pop"), ("christmas", "jazz"),
)  # fmt: skip

# Artist-name forms per genre ({A}, {B}: capitalised genre words); shared forms are added.
_ARTIST_FORMS: dict[str, tuple[str, ...]] = {
    "pop": ("{A} Girl", "{A} & The {B}s"),
    "hip hop": ("Lil {A}", "MC {A}", "Young {A}", "Big {A}", "{A} {B} Gang"),
    "country": ("The {A} Brothers", "{A} {B} Band"),
    "rock": ("The {A}s", "{A} {B} Machine"),
    "edm": ("DJ {A}", "{A}{B}", "{A} {B} Project"),
    "chill": ("{A} {B} Collective", "{A} Sessions"),
    "indie": ("The {A} {B}s", "{A} Club"),
    "latin": ("Los {A}s", "La {A}", "DJ {A}"),
    "soul": ("{A} {B} Experience", "Sister {A}"),
    "jazz": ("{A} Trio", "The {A} {B} Quintet"),
    "classical": ("{A} Orchestra", "{A} String Quartet", "{A} Ensemble"),
    "metal": ("{A} of {B}", "{A}{B}", "Black {A}"),
    "punk": ("The {A}s", "{A} Kids"),
    "folk": ("The {A} {B} Band", "{A} & {B}"),
    "k-pop": ("{A}{B}", "{A} Girls", "{A} Boys"),
    "workout": ("{A} Squad", "{A} {B} Crew"),
    "kids": ("The {A} Friends", "{A} and Friends"),
    "christmas": ("The {A} Singers", "{A} Choir"),
}
_SHARED_ARTIST_FORMS = ("{A} {B}", "The {A} {B}", "{F} {A}")
_FIRST_NAMES = (
    "Jay", "Lena", "Marco", "Nia", "Theo", "Ava", "Kai", "Rosa", "Milo", "Zoe", "Ezra", "Ivy",
    "Leo", "Maya", "Omar", "Ruby", "Sami", "Tess", "Vic", "Wren",
)  # fmt: skip
_CONNECTORS = ("on", "in the", "of", "and", "for", "with", "at", "under the", "my", "your")
_TRACK_SUFFIXES = (" - Remastered", " - Radio Edit", " - Live", " - Acoustic", " - Remix")
_ALBUM_FORMS = ("{A} {B}", "{A}", "{A} {B}", "The {A} Sessions", "{A} EP", "Live at {A}",
                "{A} {B} (Deluxe)", "Greatest Hits")  # fmt: skip
_BASE62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))

_N_SCENES = 3
# Playlists whose parameters are drawn at once (whole slices; see _Generator.run). Up to this
# many playlists, one chunk: the draws are exactly those of an unchunked run.
_CHUNK_PLAYLISTS = 50_000
# Sizing (see _sizing): the tests' sizes, real MPD's size, and the Heaps exponent in between.
_TUNED_PLAYLISTS = 10_000
_MPD_PLAYLISTS = 1_000_000
_HEAPS = 0.65
_MAX_CATALOG = 3_000_000
_LENGTH_MEDIAN = (68.0, 52.5)  # log-normal median at <= _TUNED_PLAYLISTS and at MPD's size
_LENGTH_SIGMA = (0.8, 1.04)  # ... and its sigma (52.5, 1.04: MPD's median 49, mean 66.3)
_MIN_GENRE_TRACKS = 300  # so a 250-track playlist never runs out of candidates
_OFF_SCENE = 0.12  # weight of another sub-scene's artists relative to the own scene
_GENERATED_ON = "2017-12-03 08:41:42.057563"
_VERSION = "v1"
_DAY = 86_400
_LAST_DAY = 17_471  # 2017-11-01 in days since the epoch
_FIRST_DAY = 14_610  # 2010-01-01
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_str = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept as UTF-8


def _uris(rng: np.random.Generator, kind: str, n: int) -> list[str]:
    """Draws ``n`` Spotify URIs ``spotify:{kind}:`` + 22 base62 characters."""
    if n == 0:
        return []
    chars = _BASE62[rng.integers(0, 62, size=(n, 22))]
    ids = np.ascontiguousarray(chars).view("<U22").ravel()
    prefix = f"spotify:{kind}:"
    return [prefix + s for s in ids.tolist()]


_TOKEN = re.compile(r"[\w&'-]+")


def _tokens(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` (keeps ``r&b``, ``k-pop``)."""
    return _TOKEN.findall(text.lower())


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:]


_CAP_VOCAB = {g: tuple(_cap(w) for w in words) for g, (_, words) in GENRES.items()}
_CAP_GENERIC = tuple(_cap(w) for w in GENERIC_WORDS)


def _two_words(vocab: tuple[str, ...], i: int, j: int) -> tuple[str, str]:
    """Two different words of ``vocab`` chosen by the random ints ``i`` and ``j``."""
    v = len(vocab)
    return vocab[i % v], vocab[(i + 1 + j % (v - 1)) % v]


def _track_name(cap_vocab: tuple[str, ...], r: list[int], artist_names: list[str]) -> str:
    """Builds a track name from capitalised genre words and 7 random non-negative ints ``r``."""
    a, b = _two_words(cap_vocab, r[1], r[2])
    g = _CAP_GENERIC[r[3] % len(_CAP_GENERIC)]
    form = r[0] % 10
    if form <= 1:
        name = a
    elif form <= 3:
        name = f"{a} {b}"
    elif form <= 5:
        name = f"{a} {_CONNECTORS[r[4] % len(_CONNECTORS)].title()} {b}"
    elif form == 6:
        name = f"{a} {g}"
    elif form == 7:
        name = f"{g} {_CONNECTORS[r[4] % len(_CONNECTORS)].title()} {a}"
    elif form == 8:
        name = f"The {a} {b}"
    else:
        name = f"{a} {b} {g}"
    s = r[5] % 100
    if s < 4 and artist_names:
        name += f" (feat. {artist_names[r[6] % len(artist_names)]})"
    elif s < 12:
        name += _TRACK_SUFFIXES[r[6] % len(_TRACK_SUFFIXES)]
    return name


def _artist_name(genre: str, r: list[int]) -> str:
    """Builds an artist name of ``genre`` from 4 random non-negative ints ``r``."""
    forms = _ARTIST_FORMS[genre] + _SHARED_ARTIST_FORMS
    a, b = _two_words(_CAP_VOCAB[genre], r[1], r[2])
    f = _FIRST_NAMES[r[3] % len(_FIRST_NAMES)]
    return forms[r[0] % len(forms)].format(A=a, B=b, F=f)


def _album_name(genre: str, r: list[int]) -> str:
    """Builds an album name of ``genre`` from 3 random non-negative ints ``r``."""
    a, b = _two_words(_CAP_VOCAB[genre], r[1], r[2])
    return _ALBUM_FORMS[r[0] % len(_ALBUM_FORMS)].format(A=a, B=b)


def _durations(rng: np.random.Generator, classical: np.ndarray) -> np.ndarray:
    """Track lengths in ms, log-normal around 3:35 (5:30 for classical tracks)."""
    median = np.where(classical, 330_000.0, 215_000.0)
    d = median * rng.lognormal(0.0, 0.3, size=len(classical))
    return np.clip(d, 30_000, 1_200_000).astype(np.int64)


def _weighted_distinct(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """Weighted sampling of ``k`` distinct indices (Efraimidis-Spirakis keys), any order."""
    n = len(weights)
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    keys = np.log(rng.random(n)) / weights
    return np.argpartition(-keys, k - 1)[:k]


def _cdf(weights: np.ndarray) -> np.ndarray:
    """Cumulative weights scaled to end at 1, for :func:`_draw_distinct`."""
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[-1] = 2.0  # so that a uniform draw in [0, 1) never falls past the end
    return cdf


def _draw_distinct(
    rng: np.random.Generator,
    cdf: np.ndarray,
    weights: np.ndarray,
    need: int,
    chosen: set[int],
    out: list[int],
) -> None:
    """Appends ``need`` indices not in ``chosen`` to ``out``, drawn by ``weights``.

    Drawing with replacement (by ``cdf``, from :func:`_cdf`) and skipping repeats is
    sequential weighted sampling without replacement; after a few rounds the rest is taken by
    weighted keys over what is left.
    """
    for _ in range(5):
        if need <= 0:
            return
        for t in np.searchsorted(cdf, rng.random(need + need // 2 + 8), side="right").tolist():
            if t not in chosen:
                chosen.add(t)
                out.append(t)
                need -= 1
                if need == 0:
                    return
    taken = np.fromiter(chosen, dtype=np.int64, count=len(chosen))
    left = np.setdiff1d(np.arange(len(weights)), taken)
    picks = left[_weighted_distinct(rng, weights[left], need)].tolist()
    chosen.update(picks)
    out.extend(picks)


@dataclass
class _Genre:
    """One genre's part of the catalog (its tracks are contiguous and sorted by artist)."""

    name: str
    start: int  # catalog index of the first track
    pop: np.ndarray  # track popularity, sums to 1 within the genre
    track_w: list[np.ndarray]  # per scene: track popularity x scene preference
    track_cdf: list[np.ndarray]  # per scene: _cdf(track_w)
    artist_w: list[np.ndarray]  # per scene: artist popularity x scene preference
    artist_cdf: list[np.ndarray]  # per scene: _cdf(artist_w)
    artist_tracks: list[range]  # local track indices of each artist
    artist_ids: np.ndarray  # global id of each local artist
    artist_names: list[str]
    artist_uris: list[str]
    word_tracks: list[np.ndarray]  # per vocabulary word: local tracks whose text has it
    word_cdf: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (word, scene)

    def theme_cdf(self, word: int, scene: int) -> np.ndarray:
        """Draw cdf over ``word_tracks[word]`` (non-empty) for a playlist of ``scene``."""
        cdf = self.word_cdf.get((word, scene))
        if cdf is None:
            cdf = self.word_cdf[(word, scene)] = _cdf(self.track_w[scene][self.word_tracks[word]])
        return cdf


class _Catalog:
    """The warm track catalog, with each track's JSON pre-serialised (full or reduced)."""

    def __init__(self, rng: np.random.Generator, n_tracks: int, reduced: bool) -> None:
        names = list(GENRES)
        shares = np.array([GENRES[g][0] for g in names])
        self.genre_names = names
        self.genre_share = shares / shares.sum()
        size_share = self.genre_share**0.7
        size_share /= size_share.sum()
        self.genres: list[_Genre] = []
        # Full mode: the track object without its leading '{"pos":i,'; reduced: all of it.
        self.frags: list[str] = []
        artists: list[np.ndarray] = []
        albums: list[np.ndarray] = []
        durations: list[np.ndarray] = []
        pops: list[np.ndarray] = []
        n_artists = n_albums = start = 0
        for gi, gname in enumerate(names):
            vocab = GENRES[gname][1]
            target = max(_MIN_GENRE_TRACKS, round(n_tracks * size_share[gi]))
            # Artists -> albums (1.9 on average) -> tracks (7.5 per album): as many artists as
            # it takes to reach the target number of tracks.
            n_art = math.ceil(target / 14.25 * 1.5) + 8
            alb_per_art = 1 + rng.poisson(0.9, size=n_art)
            trk_per_alb = rng.integers(2, 14, size=int(alb_per_art.sum()))
            per_art = np.add.reduceat(trk_per_alb, np.cumsum(alb_per_art) - alb_per_art)
            n_art = min(n_art, max(8, int(np.searchsorted(np.cumsum(per_art), target)) + 1))
            alb_per_art = alb_per_art[:n_art]
            n_alb = int(alb_per_art.sum())
            trk_per_alb = trk_per_alb[:n_alb]
            alb_artist = np.repeat(np.arange(n_art), alb_per_art)
            trk_album = np.repeat(np.arange(n_alb), trk_per_alb)
            trk_artist = alb_artist[trk_album]
            n_trk = len(trk_album)
            if n_trk < _MIN_GENRE_TRACKS:  # practically impossible (1.5x surplus of artists)
                raise RuntimeError(f"synth: genre {gname!r} got only {n_trk} tracks")
            art_count = np.bincount(trk_artist, minlength=n_art)
            art_start = np.concatenate([[0], np.cumsum(art_count)[:-1]])
            # Zipf-like popularity: artist rank x track rank within its artist x noise.
            art_pop = (1.0 + rng.permutation(n_art)) ** -0.7
            art_pop /= art_pop.sum()
            art_scene = rng.integers(0, _N_SCENES, size=n_art)
            trk_pop = art_pop[trk_artist] * (1.0 + rng.permutation(n_trk) % 12) ** -1.0
            trk_pop *= rng.lognormal(0.0, 0.5, size=n_trk)
            trk_pop /= trk_pop.sum()
            trk_scene = art_scene[trk_artist]
            track_w = [trk_pop * np.where(trk_scene == s, 1.0, _OFF_SCENE) for s in range(3)]
            artist_w = [art_pop * np.where(art_scene == s, 1.0, _OFF_SCENE) for s in range(3)]
            # Names and URIs.
            r_art = rng.integers(0, 1 << 30, size=(n_art, 4)).tolist()
            seen: set[str] = set()
            art_names: list[str] = []
            for r in r_art:
                name = _artist_name(gname, r)
                if name in seen:
                    name = f"{_FIRST_NAMES[(r[3] >> 8) % len(_FIRST_NAMES)]} {name}"
                base, k = name, 2
                while name in seen:
                    name = f"{base} {k}"
                    k += 1
                seen.add(name)
                art_names.append(name)
            art_uris = _uris(rng, "artist", n_art)
            r_alb = rng.integers(0, 1 << 30, (n_alb, 3)).tolist()
            alb_names = [_album_name(gname, r) for r in r_alb]
            alb_uris = _uris(rng, "album", n_alb)
            r_trk = rng.integers(0, 1 << 30, size=(n_trk, 7)).tolist()
            trk_uris = _uris(rng, "track", n_trk)
            dur = _durations(rng, np.full(n_trk, gname == "classical"))
            cap_vocab = _CAP_VOCAB[gname]
            art_json = [_str(s) for s in art_names]
            alb_json = [_str(s) for s in alb_names]
            word_index = {w: k for k, w in enumerate(vocab)}
            art_words = [{word_index[w] for w in _tokens(s) if w in word_index} for s in art_names]
            word_tracks: list[list[int]] = [[] for _ in vocab]
            for i, (a, b, d) in enumerate(
                zip(trk_artist.tolist(), trk_album.tolist(), dur.tolist(), strict=True)
            ):
                raw_name = _track_name(cap_vocab, r_trk[i], art_names)
                for k in art_words[a].union(
                    word_index[w] for w in _tokens(raw_name) if w in word_index
                ):
                    word_tracks[k].append(i)
                tname = _str(raw_name)
                if reduced:
                    self.frags.append(
                        f'{{"artist_name":{art_json[a]},"track_uri":"{trk_uris[i]}",'
                        f'"track_name":{tname}}}'
                    )
                else:
                    self.frags.append(
                        f'"artist_name":{art_json[a]},"track_uri":"{trk_uris[i]}",'
                        f'"artist_uri":"{art_uris[a]}","track_name":{tname},'
                        f'"album_uri":"{alb_uris[b]}","duration_ms":{d},'
                        f'"album_name":{alb_json[b]}}}'
                    )
            self.genres.append(
                _Genre(
                    name=gname,
                    start=start,
                    pop=trk_pop,
                    track_w=track_w,
                    track_cdf=[_cdf(w) for w in track_w],
                    artist_w=artist_w,
                    artist_cdf=[_cdf(w) for w in artist_w],
                    artist_tracks=[
                        range(s, s + c)
                        for s, c in zip(art_start.tolist(), art_count.tolist(), strict=True)
                    ],
                    artist_ids=n_artists + np.arange(n_art),
                    artist_names=art_names,
                    artist_uris=art_uris,
                    word_tracks=[np.array(t, dtype=np.int64) for t in word_tracks],
                )
            )
            artists.append(n_artists + trk_artist)
            albums.append(n_albums + trk_album)
            durations.append(dur)
            pops.append(trk_pop * self.genre_share[gi])
            n_artists += n_art
            n_albums += n_alb
            start += n_trk
        self.n_tracks = start
        self.n_artists = n_artists
        self.n_albums = n_albums
        self.track_artist = np.concatenate(artists)
        self.track_album = np.concatenate(albums)
        self.track_duration = np.concatenate(durations)
        self.global_cdf = _cdf(np.concatenate(pops))
        self.neighbours: list[list[int]] = [[] for _ in names]
        for a, b in _NEIGHBOURS:
            ia, ib = names.index(a), names.index(b)
            self.neighbours[ia].append(ib)
            self.neighbours[ib].append(ia)


@dataclass(frozen=True)
class _Sizing:
    """How big a synthetic MPD of ``n`` playlists is (see :func:`_sizing`)."""

    catalog: int  # warm catalog tracks to build
    cold_scale: float  # factor on each playlist's share of cold (one-off) rows
    length_median: float  # playlist lengths: log-normal median ...
    length_sigma: float  # ... and sigma, truncated to 5..250

    def expected_distinct(self, n: int) -> float:
        """Rough distinct tracks of ``n`` playlists: the catalog + the expected cold rows.

        An upper bound on the warm part (a few catalog tracks are never drawn); for the
        sizing's growth, not for exact counts.
        """
        mean = _mean_length(self.length_median, self.length_sigma)
        return self.catalog + n * mean * _MEAN_COLD_SHARE * self.cold_scale


_MEAN_COLD_SHARE = 1.1 / 15.1  # mean of the Beta(1.1, 14) share of cold rows


def _mean_length(median: float, sigma: float, lo: float = 5.0, hi: float = 250.0) -> float:
    """Mean of a log-normal (``median``, ``sigma``) truncated to ``lo .. hi``."""

    def phi(x: float) -> float:
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    mu = math.log(median)
    a, b = (math.log(lo) - mu) / sigma, (math.log(hi) - mu) / sigma
    return median * math.exp(sigma**2 / 2) * (phi(b - sigma) - phi(a - sigma)) / (phi(b) - phi(a))


def _sizing(n: int) -> _Sizing:
    """The sizing of ``n`` playlists.

    Up to ``_TUNED_PLAYLISTS``: a catalog of 6 tracks per playlist (at least 4,000), the full
    cold share, lengths log-normal(68, 0.8): what every test is tuned on. Above it the catalog
    and the number of cold rows grow as ``n ** _HEAPS`` (Heaps' law; real MPD's distinct tracks
    grow about so), and the length distribution moves by log n to MPD's at 1 M playlists;
    continuous at ``_TUNED_PLAYLISTS``.
    """
    if n <= _TUNED_PLAYLISTS:
        return _Sizing(min(_MAX_CATALOG, max(4_000, 6 * n)), 1.0, _LENGTH_MEDIAN[0],
                       _LENGTH_SIGMA[0])  # fmt: skip
    growth = n / _TUNED_PLAYLISTS
    t = min(1.0, math.log(growth) / math.log(_MPD_PLAYLISTS / _TUNED_PLAYLISTS))
    m0, m1 = _LENGTH_MEDIAN
    s0, s1 = _LENGTH_SIGMA
    median = m0 * (m1 / m0) ** t
    sigma = s0 + (s1 - s0) * t
    # Cold rows = n x mean length x share: scaled so that they grow as n ** _HEAPS too.
    return _Sizing(
        catalog=min(_MAX_CATALOG, round(6 * _TUNED_PLAYLISTS * growth**_HEAPS)),
        cold_scale=growth ** (_HEAPS - 1.0) * _mean_length(m0, s0) / _mean_length(median, sigma),
        length_median=median,
        length_sigma=sigma,
    )


class _Generator:
    """Draws playlists from a :class:`_Catalog` and serialises them slice by slice."""

    def __init__(self, n_playlists: int, seed: int, reduced: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.reduced = reduced
        self.sizing = _sizing(n_playlists)
        self.cat = _Catalog(self.rng, self.sizing.catalog, reduced)
        # What was written (for the log): rows, and which catalog tracks / cold tracks.
        self.rows = 0
        self.n_cold = 0
        self.used = np.zeros(self.cat.n_tracks, dtype=bool)

    def _genre_part(
        self,
        gi: int,
        n: int,
        scene: int,
        n_fav_tracks: int,
        n_fav_artists: int,
        theme: tuple[int, ...] = (),
        n_theme: int = 0,
    ) -> list[int]:
        """Draws ``n`` distinct catalog tracks of genre ``gi``.

        First about ``n_theme`` tracks whose text has a ``theme`` word (the title's words),
        then ``n_fav_tracks`` by a few favourite artists, then the rest by popularity.
        """
        rng = self.rng
        g = self.cat.genres[gi]
        chosen: set[int] = set()
        out: list[int] = []
        for k, word in enumerate(theme):
            need = (n_theme + k) // len(theme)  # split n_theme over the words
            tracks = g.word_tracks[word]
            if not need or not len(tracks):
                continue
            picks: list[int] = []
            cdf = g.theme_cdf(word, scene)
            _draw_distinct(rng, cdf, g.track_w[scene][tracks], need, set(), picks)
            for t in tracks[picks].tolist():
                if t not in chosen:
                    chosen.add(t)
                    out.append(t)
        n_fav_tracks = min(n_fav_tracks, n - len(out))
        if n_fav_tracks > 0:
            fav: list[int] = []
            n_fav = min(n_fav_artists, len(g.artist_tracks))
            _draw_distinct(rng, g.artist_cdf[scene], g.artist_w[scene], n_fav, set(), fav)
            cand = np.array([t for a in fav for t in g.artist_tracks[a]])
            for t in cand[_weighted_distinct(rng, g.pop[cand], n_fav_tracks)].tolist():
                if t not in chosen:
                    chosen.add(t)
                    out.append(t)
        _draw_distinct(rng, g.track_cdf[scene], g.track_w[scene], n - len(out), chosen, out)
        start = g.start
        return [start + t for t in out]

    def _cold(
        self, genre: np.ndarray, theme_word: list[int]
    ) -> tuple[list[int], list[int], list[int], list[str]]:
        """Makes obscure tracks, one per entry of ``genre``, each for one playlist row only.

        Args:
            genre: Genre of each new track.
            theme_word: Per track, a vocabulary index its name must use, or -1.

        Returns:
            Artist ids, album ids, durations and JSON fragments (as in the catalog).
        """
        rng = self.rng
        cat = self.cat
        n = len(genre)
        rows = rng.integers(0, 1 << 30, size=(n, 13)).tolist()
        uris = _uris(rng, "track", n)
        alb_uris = _uris(rng, "album", n)
        new_art_uris = _uris(rng, "artist", n)
        durs = _durations(rng, genre == cat.genre_names.index("classical")).tolist()
        next_artist = cat.n_artists
        arts: list[int] = []
        albs = list(range(cat.n_albums, cat.n_albums + n))  # every cold track: a new album
        frags: list[str] = []
        for j, (gi, r, word) in enumerate(zip(genre.tolist(), rows, theme_word, strict=True)):
            g = cat.genres[gi]
            if word >= 0:
                r[1] = word
            if r[8] % 5 < 3:  # a deep cut by a known artist
                local = r[9] % len(g.artist_names)
                arts.append(int(g.artist_ids[local]))
                a_name, a_uri = g.artist_names[local], g.artist_uris[local]
            else:  # an unknown artist
                arts.append(next_artist)
                next_artist += 1
                a_name, a_uri = _artist_name(g.name, r[9:13]), new_art_uris[j]
            t_name = _str(_track_name(_CAP_VOCAB[g.name], r, g.artist_names))
            if self.reduced:
                frags.append(
                    f'{{"artist_name":{_str(a_name)},"track_uri":"{uris[j]}",'
                    f'"track_name":{t_name}}}'
                )
            else:
                alb_name = _str(_album_name(g.name, r[10:13]))
                frags.append(
                    f'"artist_name":{_str(a_name)},"track_uri":"{uris[j]}",'
                    f'"artist_uri":"{a_uri}","track_name":{t_name},"album_uri":"{alb_uris[j]}",'
                    f'"duration_ms":{durs[j]},"album_name":{alb_name}}}'
                )
        return arts, albs, durs, frags

    def _title(self, gi: int, r: list[int]) -> tuple[str, tuple[int, ...]]:
        """A playlist title for genre ``gi`` and its theme: the genre words it uses.

        Returns:
            The title and the vocabulary indices of the genre words in it.
        """
        gname = self.cat.genre_names[gi]
        vocab = GENRES[gname][1]
        v = len(vocab)
        ia, ib = r[1] % v, (r[1] + 1 + r[2] % (v - 1)) % v
        a, b = vocab[ia], vocab[ib]
        gen = GENERIC_WORDS[r[3] % len(GENERIC_WORDS)]
        form = r[0] % 100
        theme: tuple[int, ...] = (ia,)
        if form < 15:
            title, theme = _GENERIC_TITLES[r[4] % len(_GENERIC_TITLES)], ()
        elif form < 30:
            title = gname if r[4] % 2 else f"{gname} {gen}"
            theme = tuple(vocab.index(w) for w in gname.split(" ") if w in vocab)
        elif form < 55:
            title = a
        elif form < 75:
            title, theme = f"{a} {b}", (ia, ib)
        elif form < 92:
            title = f"{a} {gen}" if r[4] % 2 else f"{gen} {a}"
        else:
            title, theme = f"{a} {b} {gen}", (ia, ib)
        case = r[5] % 20
        if case < 9:
            title = title.lower()
        elif case < 16:
            title = " ".join(_cap(w) for w in title.split(" "))
        elif case < 18:
            title = title.upper()
        else:
            title = _cap(title)
        return title, theme

    def _description(self, gi: int, r: list[int]) -> str:
        a, b = _two_words(GENRES[self.cat.genre_names[gi]][1], r[6], r[7])
        forms = (
            f"songs for a {a} {b} kind of day",
            f"{a}, {b} and more",
            f"all the {a} {GENERIC_WORDS[r[3] % len(GENERIC_WORDS)]} you need",
            f"my favorite {a} tracks",
        )
        return forms[r[8] % len(forms)]

    def run(self, n: int, out_dir: Path, per_slice: int, chunk: int | None = None) -> list[Path]:
        """Draws ``n`` playlists and writes them; returns the slice paths.

        Playlist-level parameters are drawn ``chunk`` playlists at a time (default
        ``_CHUNK_PLAYLISTS``, rounded down to whole slices, at least one), so memory does not
        grow with ``n``; with ``n <= chunk`` the draws are those of one unchunked run.
        """
        chunk = _CHUNK_PLAYLISTS if chunk is None else chunk
        step = max(1, chunk // per_slice) * per_slice
        paths: list[Path] = []
        for start in range(0, n, step):
            paths += self._run_chunk(start, min(n, start + step), out_dir, per_slice)
        return paths

    def _run_chunk(self, p0: int, p1: int, out_dir: Path, per_slice: int) -> list[Path]:
        """Draws playlists ``p0 .. p1 - 1`` (whole slices) and writes their slice files."""
        n = p1 - p0
        rng = self.rng
        cat = self.cat
        size = self.sizing
        n_genres = len(cat.genre_names)
        # Playlist-level draws, vectorised. Lengths: log-normal truncated to 5..250.
        lengths = np.empty(0, dtype=np.int64)
        while len(lengths) < n:
            x = np.round(rng.lognormal(math.log(size.length_median), size.length_sigma,
                                       size=2 * n + 16))  # fmt: skip
            lengths = np.concatenate([lengths, x[(x >= 5) & (x <= 250)].astype(np.int64)])
        lengths = lengths[:n]
        genre = rng.choice(n_genres, size=n, p=cat.genre_share)
        r_pl = rng.integers(0, 1 << 30, size=(n, 12)).tolist()
        # A second, usually related genre for 20% of playlists.
        two = (rng.random(n) < 0.2).tolist()
        genre2 = np.full(n, -1, dtype=np.int64)
        for pid, (gi, is_two, r) in enumerate(zip(genre.tolist(), two, r_pl, strict=True)):
            if is_two:
                nb = cat.neighbours[gi]
                if nb and r[9] % 4:
                    genre2[pid] = nb[r[10] % len(nb)]
                else:
                    genre2[pid] = (gi + 1 + r[10] % (n_genres - 1)) % n_genres
        # Row budget: cold (obscure) rows, noise rows, main and second genre rows.
        cold_share = rng.beta(1.1, 14.0, size=n)
        if size.cold_scale != 1.0:
            cold_share *= size.cold_scale
        n_cold = np.minimum(rng.binomial(lengths, cold_share), lengths - 3)
        self.n_cold += int(n_cold.sum())
        rest = lengths - n_cold
        n_noise = np.where(rest >= 10, rng.binomial(rest, 0.03), 0)
        rest = rest - n_noise
        share2 = rng.uniform(0.15, 0.45, size=n)
        n2 = np.where(genre2 >= 0, np.round(rest * share2), 0).astype(np.int64)
        n1 = rest - n2
        scenes = rng.integers(0, _N_SCENES, size=(n, 2))
        fav_share = rng.uniform(0.15, 0.6, size=n)
        nf1 = rng.binomial(n1, fav_share)
        nf2 = rng.binomial(n2, fav_share * 0.5)
        per_fav = rng.lognormal(math.log(2.0), 0.6, size=n)
        k1 = np.maximum(1, np.round(nf1 / per_fav)).astype(np.int64)
        k2 = np.maximum(1, np.round(nf2 / per_fav)).astype(np.int64)
        p_run = rng.uniform(0.05, 0.55, size=n)
        n_dup = np.where(rng.random(n) < 0.04, 1 + (rng.random(n) < 0.3), 0)
        followers = 1 + np.minimum(np.floor(rng.pareto(1.3, size=n) * 0.5), 100_000)
        day = _LAST_DAY - np.floor(rng.exponential(420.0, size=n))
        modified = (np.maximum(day, _FIRST_DAY) * _DAY).astype(np.int64)
        collaborative = rng.random(n) < 0.02
        edit_rate = rng.uniform(0.03, 0.35, size=n)
        # Titles; a title's genre words (its theme) attract tracks whose text has them.
        titled = [self._title(gi, r) for gi, r in zip(genre.tolist(), r_pl, strict=True)]
        themes = [theme for _, theme in titled]
        has_theme = np.array([bool(t) for t in themes])
        n_theme = np.where(has_theme, rng.binomial(n1, rng.uniform(0.1, 0.35, size=n)), 0)
        # Cold tracks: 80% of the main genre, 20% of the second; 40% of the main-genre ones
        # are named with a theme word. Made one slice at a time (bounded memory).
        owner = np.repeat(np.arange(n), n_cold)
        u_cold = rng.random((len(owner), 3))
        use2 = (genre2[owner] >= 0) & (u_cold[:, 0] < 0.2)
        cold_genre = np.where(use2, genre2[owner], genre[owner])
        named = (~use2 & has_theme[owner] & (u_cold[:, 1] < 0.4)).tolist()
        theme_word = [
            themes[o][int(u * len(themes[o]))] if nm else -1
            for o, nm, u in zip(owner.tolist(), named, u_cold[:, 2].tolist(), strict=True)
        ]
        cold_end = np.cumsum(n_cold).tolist()
        cols = zip(
            *(
                a.tolist()
                for a in (genre, genre2, n_noise, n1, n2, nf1, nf2, k1, k2, scenes[:, 0],
                          scenes[:, 1], p_run, n_dup, followers.astype(np.int64), modified,
                          collaborative, edit_rate, n_theme)
            ),
            strict=True,
        )  # fmt: skip
        paths: list[Path] = []
        for s_start in range(p0, p1, per_slice):  # pids; i, s_lo, s_hi: chunk indices
            s_end = s_start + per_slice - 1
            s_lo, s_hi = s_start - p0, min(p1, s_start + per_slice) - p0
            c_lo = cold_end[s_lo - 1] if s_lo else 0
            c_hi = cold_end[s_hi - 1]
            cold = self._cold(cold_genre[c_lo:c_hi], theme_word[c_lo:c_hi])
            path = out_dir / f"mpd.slice.{s_start}-{s_end}.json"
            info = {
                "generated_on": _GENERATED_ON,
                "slice": f"{s_start}-{s_end}",
                "version": _VERSION,
            }
            with path.open("w", encoding="utf-8", newline="") as fh:
                fh.write('{"info":' + _ENCODER.encode(info) + ',"playlists":[')
                for i in range(s_lo, s_hi):
                    if i > s_lo:
                        fh.write(",")
                    lo = (cold_end[i - 1] if i else 0) - c_lo
                    pl_cold = [c[lo : cold_end[i] - c_lo] for c in cold]
                    fh.write(self._playlist(p0 + i, next(cols), titled[i], r_pl[i], pl_cold))
                fh.write("]}")
            paths.append(path)
        return paths

    def _playlist(
        self,
        pid: int,
        draws: tuple,
        titled: tuple[str, tuple[int, ...]],
        r: list[int],
        cold: list[list],
    ) -> str:
        """Samples one playlist's rows from its pre-drawn parameters and serialises it."""
        (gi, g2, nn, a1, a2, f1, f2, q1, q2, sc1, sc2, pr, nd, fol, mod, col, er, nt) = draws
        title, theme = titled
        cat = self.cat
        warm = self._genre_part(gi, a1, sc1, f1, q1, theme, nt)
        if a2 > 0:
            warm += self._genre_part(g2, a2, sc2, f2, q2)
        if nn:  # noise: popular tracks of any genre
            taken = set(warm)
            for t in np.searchsorted(cat.global_cdf, self.rng.random(nn), side="right").tolist():
                if t not in taken:
                    taken.add(t)
                    warm.append(t)
        self.used[warm] = True
        rows = self._rows(warm, cold, pr, nd)
        self.rows += len(rows[0])
        desc = self._description(gi, r) if r[11] % 100 < 8 else None
        return self._serialise(pid, rows, title, desc, col, mod, fol, er)

    def _rows(
        self, warm: list[int], cold: list[list], p_run: float, n_dup: int
    ) -> tuple[list[str], int, int, int]:
        """Joins warm and cold rows, orders them with artist runs and adds duplicates.

        Args:
            warm: Catalog indices.
            cold: This playlist's cold rows: artist ids, album ids, durations, fragments.
            p_run: Chance that a track is placed right behind its artist's first track.
            n_dup: Number of duplicated rows to add.

        Returns:
            The rows' JSON fragments (full mode: without the leading ``{"pos":i,``), and the
            playlist's number of distinct artists, of distinct albums and total duration.
        """
        rng = self.rng
        cat = self.cat
        idx = np.array(warm, dtype=np.int64)
        frag_src = cat.frags
        frags = [frag_src[t] for t in warm] + cold[3]
        artist_list = cat.track_artist[idx].tolist() + cold[0]
        n = len(frags)
        # Random order, then artist runs: with probability p_run a track moves right behind
        # the first track (in the random order) of its artist.
        u = rng.random(2 * n).tolist()
        heads: list[int] = []
        first_of: dict[int, int] = {}
        runs: dict[int, list[int]] = {}
        for i in sorted(range(n), key=u.__getitem__):
            a = artist_list[i]
            first = first_of.get(a)
            if first is None:
                first_of[a] = i
                runs[i] = []
                heads.append(i)
            elif u[n + i] < p_run:
                runs[first].append(i)
            else:
                heads.append(i)
        order: list[int] = []
        for i in heads:
            order.append(i)
            run = runs.get(i)
            if run:
                order.extend(run)
        frags = [frags[i] for i in order]
        durs = cat.track_duration[idx].tolist() + cold[2]
        duration = sum(durs)
        n_artists = len(set(artist_list))
        n_albums = len(set(cat.track_album[idx].tolist() + cold[1]))
        # A few playlists repeat a track, as real MPD does (never beyond 250 rows).
        if n_dup and n + n_dup <= 250:
            for src, where in zip(
                rng.integers(0, n, size=n_dup).tolist(), rng.random(n_dup).tolist(), strict=True
            ):
                dst = src + 1 + int(where * (len(frags) - src))
                frags.insert(dst, frags[src])
                order.insert(dst, order[src])
                duration += durs[order[src]]
        return frags, n_artists, n_albums, duration

    def _serialise(
        self,
        pid: int,
        rows: tuple[list[str], int, int, int],
        name: str,
        description: str | None,
        collaborative: bool,
        modified_at: int,
        followers: int,
        edit_rate: float,
    ) -> str:
        """One playlist as a JSON object string, keys in MPD order."""
        frags, n_artists, n_albums, duration = rows
        n = len(frags)
        if self.reduced:
            items = frags
            head: dict[str, object] = {
                "name": name,
                "pid": pid,
                "num_tracks": n,
                "num_followers": followers,
            }
        else:
            items = [f'{{"pos":{i},{frag}' for i, frag in enumerate(frags)]
            head = {
                "name": name,
                "collaborative": "true" if collaborative else "false",
                "pid": pid,
                "modified_at": modified_at,
                "num_tracks": n,
                "num_albums": n_albums,
                "num_followers": followers,
            }
        tail: dict[str, object] = {
            "num_edits": max(1, round(n * edit_rate) + (modified_at // _DAY) % 3),
            "duration_ms": duration,
            "num_artists": n_artists,
        }
        if description is not None:
            tail["description"] = description
        return (
            _ENCODER.encode(head)[:-1]
            + ',"tracks":['
            + ",".join(items)
            + "],"
            + _ENCODER.encode(tail)[1:]
        )


def generate(
    n_playlists: int,
    out_dir: Path | str,
    *,
    seed: int = 0,
    playlists_per_slice: int = 1000,
    reduced: bool = False,
) -> list[Path]:
    """Writes a synthetic MPD as slice files (see the module docstring for the contract).

    Args:
        n_playlists: Number of playlists to write (>= 1); pids are 0..n_playlists - 1.
        out_dir: Folder for the slice files; created if missing. Existing slice files with
            the same names are overwritten; other files are left alone.
        seed: Seed of the only random generator used; same arguments, same bytes.
        playlists_per_slice: Playlists per slice file (>= 1); real MPD uses 1000.
        reduced: Write only the fields the real ``mpd-dev`` set has (same content otherwise).

    Returns:
        The slice file paths, in pid order.

    Raises:
        ValueError: If ``n_playlists`` or ``playlists_per_slice`` is below 1.
    """
    if n_playlists < 1:
        raise ValueError(f"synth.generate: n_playlists must be >= 1, got {n_playlists}")
    if playlists_per_slice < 1:
        raise ValueError(
            f"synth.generate: playlists_per_slice must be >= 1, got {playlists_per_slice}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gen = _Generator(n_playlists, seed, reduced)
    paths = gen.run(n_playlists, out, playlists_per_slice)
    logger.info(
        "synth: wrote %d playlists in %d slice file(s) to %s (seed=%d, reduced=%s) in %.2fs: "
        "%d rows, %d distinct tracks (%d of the %d catalog tracks, %d one-off)",
        n_playlists,
        len(paths),
        out,
        seed,
        reduced,
        time.perf_counter() - t0,
        gen.rows,
        int(gen.used.sum()) + gen.n_cold,
        int(gen.used.sum()),
        gen.cat.n_tracks,
        gen.n_cold,
    )
    return paths
