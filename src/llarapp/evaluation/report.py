"""Markdown tables of an evaluation: the quality benchmark's and the evaluate stage's report."""

from __future__ import annotations

from llarapp.data.split import CATEGORY_NAMES
from llarapp.evaluation.evaluate import HEADLINE


def format_tables(result: dict) -> str:
    """Markdown tables: overall and warm/cold per model, then NDCG and R-precision per category.

    Args:
        result: ``{"models": {NAME: evaluate(...)}, "seconds": {STAGE: s}}`` (the JSON of
            ``llarapp benchmark quality`` or of the evaluate stage).
    """
    models = result["models"]
    lines = ["| model | " + " | ".join(HEADLINE) + " | cold recall@500 | ms/case |"]
    lines.append("|---" * (len(HEADLINE) + 3) + "|")
    for name, r in models.items():
        cells = [f"{r['overall'][m]:.4f}" for m in HEADLINE]
        cold = r["cold"].get("recall@500", 0.0)
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {cold:.4f} | {r['ms_per_case']:.1f} |"
        )
    leaky = {n: r for n, r in models.items() if "leaky_catalogue" in r}
    if leaky:
        lines += ["", "catalogue: honest (with distractors) vs leaky (without: an upper bound)", ""]
        lines.append(
            "| model | ndcg | ndcg leaky | warm ndcg | warm ndcg leaky | warm change "
            "| cold recall@500 | cold recall@500 leaky |"
        )
        lines.append("|---" * 8 + "|")
        for name, r in leaky.items():
            lk = r["leaky_catalogue"]
            warm, warm_lk = r["warm"].get("ndcg", 0.0), lk["warm"].get("ndcg", 0.0)
            change = (warm / warm_lk - 1) * 100 if warm_lk else float("nan")
            lines.append(
                f"| {name} | {r['overall']['ndcg']:.4f} | {lk['overall']['ndcg']:.4f} "
                f"| {warm:.4f} | {warm_lk:.4f} | {change:+.2f} % "
                f"| {r['cold'].get('recall@500', 0.0):.4f} "
                f"| {lk['cold'].get('recall@500', 0.0):.4f} |"
            )
    lines += _seed_tables(models)
    for metric in ("ndcg", "r_precision"):
        cats = [c for c in CATEGORY_NAMES if any(c in r["categories"] for r in models.values())]
        lines += ["", f"{metric} per category", ""]
        lines.append("| category | cases | " + " | ".join(models) + " |")
        lines.append("|---" * (len(models) + 2) + "|")
        for c in cats:
            first = next(iter(models.values()))["categories"].get(c, {})
            row = [
                f"{r['categories'].get(c, {}).get(metric, float('nan')):.4f}"
                for r in models.values()
            ]
            lines.append(f"| {c} | {first.get('cases', 0)} | " + " | ".join(row) + " |")
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in result["seconds"].items())
    lines += ["", f"seconds: {secs}"]
    return "\n".join(lines)


def _seed_tables(models: dict) -> list[str]:
    """NDCG of the cases with seeds, as they are and with every seed unknown to the catalogue
    (``seeds`` of :func:`~llarapp.training.roster.fit_and_evaluate`), overall and per category."""
    views = {n: r["seeds"] for n, r in models.items() if "seeds" in r}
    if not views:
        return []
    cats = [c for c in CATEGORY_NAMES if any(c in v["known"]["categories"] for v in views.values())]
    lines = ["", "ndcg of the cases with seeds: seeds known vs unknown to the catalogue", ""]
    lines.append("| seeds | " + " | ".join(views) + " |")
    lines.append("|---" * (len(views) + 1) + "|")
    for group in ["overall", *cats]:
        for view in ("known", "unknown"):
            parts = [
                v[view]["overall"] if group == "overall" else v[view]["categories"].get(group, {})
                for v in views.values()
            ]
            cells = [f"{part.get('ndcg', float('nan')):.4f}" for part in parts]
            lines.append(f"| {group}, {view} | " + " | ".join(cells) + " |")
    return lines
