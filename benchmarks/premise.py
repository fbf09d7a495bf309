"""The premise test (issue 16): does CompMod keep label information that augmentation takes out of one view?

    python -m benchmarks.cpu_study run --jobs 2   # trains the premise sweeps with the study's
    python -m benchmarks.premise                  # probes them: benchmarks/results/premise.md, docs/img

Data: `two_parts` (compmod.data.datasets.two_parts): the label is the pair of a grating class (part A) and
a shape class (part B) at opposite corners; the training crops (area scale 0.3-0.6) mostly keep one part.
SimCLR with the small CNN (configs/premise_two_parts.yaml), 10 epochs on 20,000 images, plain, + CompMod
(bi-level, xi every 4 steps) and + CompMod without the bi-level update, at CompMod's default lambdas
(1, 1), seeds 0, 1, 2 (`premise/<variant>`), and the same network at random initialisation.

For each trained encoder the frozen backbone features h of the 20,000 train and 4,000 test images (whole
images, no crop) are probed for part A's class, part B's class and the pair: 5-NN (cosine) and a linear
probe (30 epochs, the evaluation defaults). The effective rank of h and of the projection z on the test
images says how many directions each keeps.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from benchmarks.cpu_study import STUDY, Sweep
from compmod.config import load_config
from compmod.data.augment import eval_transform
from compmod.data.build import build_dataset
from compmod.data.datasets.two_parts import part_labels
from compmod.engine.builders import build_method
from compmod.engine.pretrained import load_pretrained
from compmod.engine.run_dir import checkpoint_path
from compmod.eval.diagnostics import representation_stats
from compmod.eval.features import extract_features
from compmod.eval.knn import knn_accuracy
from compmod.eval.linear import linear_probe

CONFIG = "configs/premise_two_parts.yaml"
PREMISE = STUDY / "premise"
SEEDS = (0, 1, 2)
COMMON = ("train.precision=bf16", "train.threads=1", "train.progress=false")
VARIANTS = {
    "plain": ("compmod.enabled=false",),
    "compmod": ("compmod.enabled=true", "compmod.meta.mode=jvp", "compmod.meta.every=4"),
    "compmod_nobilevel": ("compmod.enabled=true", "compmod.meta.mode=off"),
}
TARGETS = ("part A", "part B", "pair")


def sweeps() -> list[Sweep]:
    seeds = f"train.seed=[{', '.join(map(str, SEEDS))}]"
    return [Sweep(PREMISE / v, "", [*COMMON, *sets], [seeds], config=CONFIG) for v, sets in VARIANTS.items()]


def _target(name: str, labels: torch.Tensor) -> torch.Tensor:
    return {"part A": part_labels(labels)[0], "part B": part_labels(labels)[1], "pair": labels}[name]


def probe(encode, cfg, mean, std, embed=None) -> dict[str, float]:
    """5-NN and linear top-1 of part A, part B and the pair from h; effective ranks of h and z."""
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")

    def transform(x: torch.Tensor) -> torch.Tensor:
        return eval_transform(x, 32, mean, std)

    h_train, h_test = (extract_features(encode, d.images, transform) for d in (train, test))
    out: dict[str, float] = {}
    for name in TARGETS:
        y_train, y_test = (_target(name, d.labels) for d in (train, test))
        out[f"{name} 5-NN"] = knn_accuracy(h_train, y_train, h_test, y_test, k=5)
        classes = int(y_train.max()) + 1
        out[f"{name} linear"] = linear_probe(h_train, y_train, h_test, y_test, classes)["linear_top1"]
    if embed is not None:
        hz = extract_features(embed, test.images, transform)
        stats = representation_stats(hz[:, : h_test.shape[1]], hz[:, h_test.shape[1] :])
        out["h eff. rank"], out["z eff. rank"] = stats["h_effective_rank"], stats["z_effective_rank"]
    return out


def measure(variant: str, seed: int) -> dict[str, float]:
    """The probes of one encoder, kept in `<premise>/<variant>/seed=<s>/probe.json` once measured."""
    cache = PREMISE / variant.replace(" ", "_") / f"seed={seed}" / "probe.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    out = _measure(variant, seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out, indent=2) + "\n")
    return out


def _measure(variant: str, seed: int) -> dict[str, float]:
    if variant == "random init":
        cfg = load_config(CONFIG, [f"train.seed={seed}"])
        train = build_dataset(cfg, "train")
        torch.manual_seed(seed)
        method = build_method(cfg, 1, 32)
        return probe(method.backbone, cfg, train.mean, train.std, method.embed)
    p = load_pretrained(checkpoint_path(PREMISE / variant / f"seed={seed}"))
    return probe(p.method.backbone, p.cfg, p.mean, p.std, p.method.embed)


def fmt(values: list[float]) -> str:
    sd = f"{statistics.stdev(values):.1f}" if len(values) > 1 else "n/a"
    return f"{statistics.mean(values):.1f} ± {sd}"


def finished_seeds(variant: str) -> list[int]:
    """The seeds of `variant` whose run has finished (every seed for the random initialisation)."""
    if variant == "random init":
        return list(SEEDS)
    return [s for s in SEEDS if (PREMISE / variant / f"seed={s}" / "results.json").is_file()]


def write_report(out: Path = Path("benchmarks/results/premise.md")) -> Path:
    torch.set_num_threads(1)
    seeds = {v: finished_seeds(v) for v in ("random init", *VARIANTS)}
    rows = {v: [measure(v, s) for s in seeds[v]] for v in seeds if seeds[v]}
    keys = list(rows["random init"][0])
    lines = [
        "## premise",
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        "| encoder | seeds | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 2) + "|",
    ]
    for v, per_seed in rows.items():
        cells = " | ".join(fmt([r[k] for r in per_seed]) for k in keys)
        lines.append(f"| {v} | {', '.join(map(str, seeds[v]))} | {cells} |")
    lines += ["", "Per seed:", ""]
    for v, per_seed in rows.items():
        for k in keys:
            lines.append(f"- {v}, {k}: " + ", ".join(f"{r[k]:.2f}" for r in per_seed))
    out.write_text("\n".join(lines) + "\n")
    _plot(rows, Path("docs/img/premise.png"))
    return out


def _plot(rows: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    width = 0.8 / len(rows)
    for ax, probe_kind in zip(axes, ("linear", "5-NN"), strict=True):
        for i, (v, per_seed) in enumerate(rows.items()):
            means = [statistics.mean(r[f"{t} {probe_kind}"] for r in per_seed) for t in TARGETS]
            sds = [
                statistics.stdev(r[f"{t} {probe_kind}"] for r in per_seed) if len(per_seed) > 1 else 0.0
                for t in TARGETS
            ]
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(TARGETS))]
            ax.bar(xs, means, width, yerr=sds, label=v, capsize=2)
        ax.set_xticks(range(len(TARGETS)), TARGETS)
        ax.set_title(f"{probe_kind} probe of frozen h (two_parts test split)")
    axes[0].set_ylabel("top-1 (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print(write_report())


if __name__ == "__main__":
    main()
