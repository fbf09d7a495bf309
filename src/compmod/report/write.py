"""`write_report`: the comparison table, curves and t-SNE maps of some runs, as PNGs and one report.md."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from compmod.errors import CheckpointError
from compmod.eval.diagnostics import representation_stats
from compmod.report.curves import save_epoch_curves, save_loss_curves
from compmod.report.runs import Run, display_names, load_run, slug
from compmod.report.table import comparison_table, stats_table
from compmod.report.tsne import Embedding, embed_run, save_tsne

EPOCH_FIGURES = (
    ("knn", "kNN and online linear accuracy over epochs"),
    ("diagnostics", "Representation diagnostics over epochs"),
)


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    tsne: bool = True,
    tsne_points: int = 2000,
    device: torch.device | str = "cpu",
) -> dict[str, Path]:
    """Compare the runs in `run_dirs`; write `out_dir/report.md` and its PNGs.

    Written: `loss_<run>.png` per run (loss parts over steps, CompMod's terms and controls on their own
    panels); `knn.png` and `diagnostics.png` when the epoch records hold `epoch_*knn*` keys or other
    per-epoch diagnostics (one line per run); with `tsne`, `tsne_<run>.png` per run (backbone features of
    `tsne_points` test images re-extracted from the run's checkpoint on `device`) and a table of
    `representation_stats` of those images' h and z. Every run directory is read before anything is
    written, so a wrong path fails fast (CheckpointError naming it).

    Returns the written paths: "report", "loss:<run>", "knn", "diagnostics", "tsne:<run>", where <run>
    is the run's display name (its directory name, or a longer path suffix when names repeat).
    """
    if not run_dirs:
        raise ValueError("write_report needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    names = display_names(runs)
    if len(set(names)) != len(names):
        raise ValueError(f"the same run directory is given twice: {', '.join(map(str, run_dirs))}")
    stems = [
        slug(n) if [slug(m) for m in names].count(slug(n)) == 1 else f"{slug(n)}-{i}"
        for i, n in enumerate(names)
    ]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    sections = [_loss_section(runs, names, stems, out, paths), *_epoch_sections(runs, names, out, paths)]
    stats_md = ""
    if tsne:
        tsne_md, stats_md = _tsne_sections(runs, names, stems, out, paths, tsne_points, device)
        sections.append(tsne_md)
    listing = "\n".join(f"- `{n}`: {r.path}" for r, n in zip(runs, names, strict=True))
    body = ["# compmod report\n\n" + listing + "\n", "## Results\n\n" + comparison_table(runs, names)]
    if any(r.accuracy_keys or r.diagnostic_keys for r in runs):
        body.append(
            "`final …` columns: the last epoch's online-monitor values (kNN and diagnostics on "
            "`eval.monitor_images` labelled train images, not the test split).\n"
        )
    report = out / "report.md"
    report.write_text("\n".join([*body, *([stats_md] if stats_md else []), *sections]))
    paths["report"] = report
    return paths


def _loss_section(
    runs: Sequence[Run], names: Sequence[str], stems: Sequence[str], out: Path, paths: dict[str, Path]
) -> str:
    parts = []
    for run, name, stem in zip(runs, names, stems, strict=True):
        path, _ = save_loss_curves(run, out / f"loss_{stem}.png", f"{run.label} ({name})")
        paths[f"loss:{name}"] = path
        parts.append(f"### {name}\n\n![loss curves of {name}]({path.name})\n")
    return "## Loss curves\n\n" + "\n".join(parts)


def _epoch_sections(
    runs: Sequence[Run], names: Sequence[str], out: Path, paths: dict[str, Path]
) -> list[str]:
    sections = []
    for key, title in EPOCH_FIGURES:
        keys_of = (lambda r: r.accuracy_keys) if key == "knn" else (lambda r: r.diagnostic_keys)
        keys = list(dict.fromkeys(k for r in runs for k in keys_of(r)))
        if keys:
            paths[key] = save_epoch_curves(runs, names, keys, out / f"{key}.png", title)
            sections.append(f"## {title}\n\n![{title}]({key}.png)\n")
    return sections


def _tsne_sections(
    runs: Sequence[Run],
    names: Sequence[str],
    stems: Sequence[str],
    out: Path,
    paths: dict[str, Path],
    n: int,
    device: torch.device | str,
) -> tuple[str, str]:
    """The t-SNE section and the representation-diagnostics section (both from one embedding per run)."""
    stats, parts = {}, []
    for run, name, stem in zip(runs, names, stems, strict=True):
        emb = _embed(run, n, device)
        title = f"{run.label} ({name})\nbackbone features of {len(emb.labels)} test images"
        path, _ = save_tsne(emb.h, emb.labels, emb.classes, out / f"tsne_{stem}.png", title)
        paths[f"tsne:{name}"] = path
        stats[name] = representation_stats(emb.h, emb.z)
        parts.append(f"### {name}\n\n![t-SNE of {name}]({path.name})\n")
    stats_md = (
        f"## Representation diagnostics ({n} test images at most)\n\n"
        "Effective rank (Roy & Vetterli 2007, centred) and coding rate (MCR^2, eps = 0.5, in nats) of the "
        "backbone features h and the projections z.\n\n"
        + stats_table(stats, {name: r.label for r, name in zip(runs, names, strict=True)})
    )
    return "## t-SNE of backbone features\n\n" + "\n".join(parts), stats_md


def _embed(run: Run, n: int, device: torch.device | str) -> Embedding:
    try:
        return embed_run(run.path, n, device)
    except CheckpointError as e:
        raise CheckpointError(
            f"{e}; the t-SNE needs the run's checkpoint (report without it: tsne=False)"
        ) from None
