"""Paired comparisons of sweep variants: each (variant, baseline) pair on the
models they share, unit by unit (a fold, or a seed), with the two-sided
Wilcoxon signed-rank test. A sweep file's PAIRS names the pairs."""

from typing import Optional, Sequence

import numpy as np

from mtl_ser.experiments import sweeps


def paired(
    runs: Sequence[tuple[dict, str]],
    pairs: Sequence[tuple[str, str]],
    metric: str,
) -> list[dict]:
    """Compares each (variant, baseline) pair on the models they share.

    Models are matched by seed and fold. The unit of comparison is the fold
    (its seeds averaged) for cross-validation, else the seed. The p-value is
    the two-sided Wilcoxon signed-rank test over those units (None below 2
    units or when every difference is 0); with n units the smallest possible
    exact p is 2 / 2**n, so 5 folds can never reach 0.05.

    Returns:
      Per pair: {"variant", "baseline", "metric", "units": [{"unit", "variant",
      "baseline", "difference"}], "mean_difference", "std_difference", "wins",
      "losses", "ties", "p_value"}.
    """
    values = _values(runs, metric)
    out = []
    for variant, baseline in pairs:
        a, b = values.get(variant, {}), values.get(baseline, {})
        shared = sorted(set(a) & set(b), key=str)
        if not shared:
            raise ValueError(
                f"paired comparison {variant} vs {baseline}: no models in common "
                f"(runs of {variant}: {len(a)}, of {baseline}: {len(b)})"
            )
        rows = _unit_rows(a, b, shared)
        out.append(_comparison(variant, baseline, metric, rows))
    return out


def _values(runs, metric: str) -> dict:
    """Variant group -> {(fold, seed): the metric of that model}."""
    values: dict[str, dict[tuple, float]] = {}
    for overrides, run_dir in runs:
        for rec in sweeps.records(run_dir):
            value = rec["scalars"].get(metric)
            if value is not None:
                key = (rec["fold"], overrides.get("seed"))
                values.setdefault(sweeps.group_name(overrides), {})[key] = value
    return values


def _unit_rows(a: dict, b: dict, shared: list) -> list[dict]:
    """Per unit (fold, its seeds averaged; else seed): both values and their
    difference."""
    by_fold = len({fold for fold, _ in shared}) > 1
    units: dict[str, list[tuple[float, float]]] = {}
    for fold, seed in shared:
        unit = fold if by_fold else f"seed={seed}"
        units.setdefault(unit, []).append((a[(fold, seed)], b[(fold, seed)]))
    rows = []
    for unit, both in units.items():
        va, vb = np.mean([x for x, _ in both]), np.mean([y for _, y in both])
        rows.append(
            {
                "unit": unit,
                "variant": float(va),
                "baseline": float(vb),
                "difference": float(va - vb),
            }
        )
    return rows


def _comparison(variant: str, baseline: str, metric: str, rows: list) -> dict:
    diffs = np.array([r["difference"] for r in rows])
    return {
        "variant": variant,
        "baseline": baseline,
        "metric": metric,
        "units": rows,
        "mean_difference": float(diffs.mean()),
        "std_difference": float(diffs.std()),
        "wins": int((diffs > 0).sum()),
        "losses": int((diffs < 0).sum()),
        "ties": int((diffs == 0).sum()),
        "p_value": _wilcoxon(diffs),
    }


def _wilcoxon(differences: np.ndarray) -> Optional[float]:
    if len(differences) < 2 or not np.any(differences):
        return None
    from scipy import stats

    return float(stats.wilcoxon(differences).pvalue)


def markdown(comparisons: Sequence[dict]) -> str:
    """One table per pair: the metric per unit, the differences, the test."""
    out = []
    for c in comparisons:
        lines = [
            f"**{c['variant']} vs {c['baseline']}** ({c['metric']}):",
            "",
            f"| unit | {c['baseline']} | {c['variant']} | difference |",
            "|---|---|---|---|",
        ]
        for r in c["units"]:
            lines.append(
                f"| {r['unit']} | {r['baseline']:.4f} | {r['variant']:.4f} "
                f"| {r['difference']:+.4f} |"
            )
        p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3g}"
        lines += [
            "",
            f"Mean difference {c['mean_difference']:+.4f} ± "
            f"{c['std_difference']:.4f}; {c['variant']} better on {c['wins']}, "
            f"worse on {c['losses']}, equal on {c['ties']} of {len(c['units'])}; "
            f"Wilcoxon signed-rank p = {p}.",
        ]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"
