"""A task run's report: `report.md` and its plots (`pr_curve.png`, `calibration.png`, `importance.png`; matplotlib,
Agg backend). Everything is drawn from metrics.json's content, so the report shows exactly what was measured."""

from __future__ import annotations

import os
from pathlib import Path

TOP = 20  # inputs shown in the importance plot and table


def write(folder: Path, result: dict, pr: tuple[list[float], list[float]]) -> Path:
    plots(folder, result, pr)
    path = folder / "report.md"
    path.write_text("\n".join(markdown(result, folder)) + "\n")
    return path


def _num(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(r: dict, folder: Path) -> list[str]:
    test, split = r["test"], r["split"]
    manifest = os.path.relpath(r["paths"]["manifest"], folder)
    lines = [f"# Task `{r['task']}` v{r['version']}", ""]
    if r["description"]:
        lines += [r["description"], ""]
    lines += [
        f"- Label `{r['label']['name']}` v{r['label']['version']} (source `{r['label']['source']}`), as known at "
        f"**{r['labels_as_of']}**; {split['unknown_label_rows']} spine rows left out, their label not yet known.",
        f"- Split at **{split['at']}** ({split['rule']}): train {split['train_rows']:,} rows "
        f"({split['train_positives']:,} positive), test {split['test_rows']:,} rows ({test['positives']:,} positive, "
        f"{_num(test['positive_rate'])}).",
        f"- Model: {r['model']['kind']} ({', '.join(f'{k}={v}' for k, v in r['model']['params'].items()) or 'defaults'}; "
        f"seed {r['model']['seed']}), on {len(r['inputs'])} "
        f"inputs from {', '.join(f'`{n}`' for n in r['features'])} and the spine.",
        f"- Training set: [{os.path.relpath(r['paths']['training_set'], folder)}]"
        f"({os.path.relpath(r['paths']['training_set'], folder)}), manifest [{manifest}]({manifest}) "
        f"(`tally training-set --from-manifest {manifest} --out rebuilt` rebuilds the identical rows); model in "
        "`model/` (`PipelineModel.load`).",
        "", "## Metrics on the test period", "",
        "| metric | value |", "|---|---|",
    ]
    for key, name in (("auc_pr", "AUC-PR (average precision)"), ("auc_roc", "AUC-ROC")):
        if key in test:
            lines.append(f"| {name} | {_num(test[key])} |")
    lines.append(f"| positive rate (a random model's AUC-PR) | {_num(test['positive_rate'])} |")
    if "lift" in test:
        lines += ["", "### Lift at the top k % by score", "", "| top | rows | positives | rate | lift |",
                  "|---|---|---|---|---|"]
        lines += [f"| {x['k']:.0%} | {x['rows']:,} | {x['positives']:.1f} | {_num(x['rate'])} | {_num(x['lift'], 2)} |"
                  for x in test["lift"]]
    lines += ["", "![precision-recall curve](pr_curve.png)"]
    if "calibration" in test:
        lines += ["", "### Calibration (score deciles)", "", "| bin | rows | scores | mean score | observed rate |",
                  "|---|---|---|---|---|"]
        lines += [f"| {b['bin']} | {b['rows']:,} | {_num(b['min_score'])} .. {_num(b['max_score'])} | "
                  f"{_num(b['mean_score'])} | {_num(b['observed_rate'])} |" for b in test["calibration"]]
        lines += ["", "![calibration](calibration.png)"]
    for column, rows in r["segments"].items():
        top = f"lift@{r['test']['lift'][0]['k']:.0%}" if r["test"].get("lift") else "lift"
        lines += ["", f"### By `{column}`", "", f"| value | rows | positives | rate | AUC-PR | AUC-ROC | {top} |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {x['value']} | {x['rows']:,} | {x['positives']:,} | {_num(x['positive_rate'])} | "
                  f"{_num(x.get('auc_pr'))} | {_num(x.get('auc_roc'))} | "
                  f"{_num(x['lift'][0]['lift'], 2) if x.get('lift') else '–'} |" for x in rows]
    lines += ["", f"## Feature importance (top {TOP})", "", "| input | importance |", "|---|---|"]
    lines += [f"| `{x['input']}` | {x['importance']:.4f} |" for x in r["importance"][:TOP]]
    lines += ["", "![feature importance](importance.png)"]
    if r["backfilled"]:
        lines += ["", "Backfilled for this run: " + ", ".join(f"{b['view']} v{b['version']} {b['start']}..{b['end']}"
                                                           for b in r["backfilled"])]
    return lines


def plots(folder: Path, r: dict, pr: tuple[list[float], list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: the PNGs are the only output
    import matplotlib.pyplot as plt

    title = f"{r['task']} v{r['version']}, labels as of {r['labels_as_of']}"
    test = r["test"]

    fig, ax = plt.subplots(figsize=(6, 5))
    recall, precision = pr
    # precision at a threshold holds over the recall it gained: the area under these steps is the AUC-PR
    ax.step([0.0, *recall], [*precision[:1], *precision], where="pre", label=f"AUC-PR {_num(test.get('auc_pr'), 3)}")
    ax.axhline(test["positive_rate"] or 0, color="gray", linestyle="--", label="random")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"PR curve: {title}")
    ax.legend(loc="upper right")
    _save(fig, folder / "pr_curve.png", plt)

    fig, ax = plt.subplots(figsize=(6, 5))
    bins = test.get("calibration") or []
    top = max([b["mean_score"] for b in bins] + [b["observed_rate"] for b in bins] + [1e-6])
    ax.plot([0, top], [0, top], color="gray", linestyle="--", label="perfect")
    ax.plot([b["mean_score"] for b in bins], [b["observed_rate"] for b in bins], marker="o", label="deciles")
    ax.set(xlabel="mean predicted score", ylabel="observed rate", title=f"Calibration: {title}")
    ax.legend(loc="upper left")
    _save(fig, folder / "calibration.png", plt)

    shown = r["importance"][:TOP][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(shown) + 1.5))
    ax.barh([x["input"] for x in shown], [x["importance"] for x in shown])
    ax.set(xlabel="importance (normalized)", title=f"Feature importance: {title}")
    _save(fig, folder / "importance.png", plt)


def _save(fig, path: Path, plt) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
