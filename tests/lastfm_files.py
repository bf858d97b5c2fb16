"""Writers for synthetic files in the LLaRA LastFM format, shared by the LastFM tests."""

from __future__ import annotations

import json
from pathlib import Path


def prefix_rows(seq: list[int], pad: int, width: int = 10) -> list[dict]:
    """Rows of one user as LLaRA writes them: empty history first, then prefixes / windows."""
    rows = []
    for t, target in enumerate(seq):
        hist = seq[max(0, t - width) : t]
        rows.append(
            {
                "seq": hist + [pad] * (width - len(hist)),
                "len_seq": max(1, len(hist)),
                "next": target,
            }
        )
    return rows


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_split(
    folder: Path, train_seqs: list[list[int]], val_rows: list[dict], names: list[str], pad: int
) -> Path:
    """Write a LastFM split to ``folder``: ``train_data.jsonl`` (every prefix row of each
    training user), ``Val_data.jsonl`` (``val_rows``) and ``id2name.txt`` (UTF-8, CRLF lines)."""
    write_jsonl(folder / "train_data.jsonl", [r for s in train_seqs for r in prefix_rows(s, pad)])
    write_jsonl(folder / "Val_data.jsonl", val_rows)
    lines = "".join(f"{i}::{name}\r\n" for i, name in enumerate(names))
    (folder / "id2name.txt").write_bytes(lines.encode("utf-8"))
    return folder
