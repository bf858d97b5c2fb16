"""Writers for synthetic files in the LLaRA LastFM format, shared by the LastFM tests."""

from __future__ import annotations

import json


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
