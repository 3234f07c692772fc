"""`cxrlens data ...`: summary, prepare, split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cxrlens.cli.common import console, err_console, progress_bar
from cxrlens.cli.options import SetOpt, resolve
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.export import write_dataset_folder
from cxrlens.data.labels import choose_labels
from cxrlens.data.sources import load_dataset
from cxrlens.data.splits import absent_training_labels, fold_sources, hold_out, make_splits, split_counts, write_splits
from cxrlens.data.streaming import node_share, write_shards
from cxrlens.data.summary import summarize
from cxrlens.errors import ConfigError, DataError
from cxrlens.fileio import json_text

app = typer.Typer(
    help=(
        "Read, check, preprocess and split data. --data takes a folder (cxrlens metadata.csv, Cohen's "
        "covid-chestxray-dataset, or Kermany chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}), a CSV file, "
        "or @sample; repeat it to combine sources. Default: $CXRLENS_DATA, else @sample."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)

DataOpt = Annotated[list[str] | None, typer.Option("--data", "-d", help="data folder, CSV or @sample")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="study config YAML (its data: part)")]
SkipOpt = Annotated[bool, typer.Option("--skip-bad", help="skip bad rows/images (counted) instead of stopping")]
PresetOpt = Annotated[str | None, typer.Option("--labels", help="label preset: auto or paper14")]
MinOpt = Annotated[int | None, typer.Option("--min-images", help="labels below this count are not learnable")]


@app.command("summary")
def summary_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    skip_bad: SkipOpt = False,
    labels: PresetOpt = None,
    min_images: MinOpt = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="do not open image headers")] = False,
    assignments: SetOpt = None,
) -> None:
    """Images, patients, sources, labels (with ancestors), views, sizes, rare labels and problems."""
    cfg = resolve(ctx, config).data
    dataset = load_dataset(cfg=cfg)
    if as_json:
        result = summarize(dataset, cfg, check_images=not no_check)
        print(json_text(result))
        return
    with progress_bar("checking images", len(dataset)) as advance:
        result = summarize(dataset, cfg, check_images=not no_check, progress=advance)
    _print_summary(result)


def _print_summary(s: dict) -> None:  # type: ignore[type-arg]
    console.print(f"[bold]{s['images']}[/] images, [bold]{s['patients']}[/] patients in {s['root']}")
    for source, counts in s["sources"].items():
        console.print(f"  {source}: {counts['images']} images, {counts['patients']} patients")
    table = Table(title="labels (images, ancestors included)")
    table.add_column("label")
    table.add_column("images", justify="right")
    table.add_column("learnable")
    for name, count in s["labels"].items():
        table.add_row(name, str(count), "no" if name in s["rare_labels"] else "yes")
    for name, count in s["rare_labels"].items():
        if name not in s["labels"]:
            table.add_row(name, str(count), "no")
    console.print(table)
    console.print("views: " + ", ".join(f"{v} {n}" for v, n in s["views"].items()))
    if s["image_sizes"]:
        w, h = s["image_sizes"]["width"], s["image_sizes"]["height"]
        if w:
            console.print(
                f"sizes: width {w['min']}-{w['max']} (median {w['median']:.0f}), "
                f"height {h['min']}-{h['max']} (median {h['median']:.0f})"
            )
    console.print(f"lung masks: {s['lung_masks']}")
    console.print(f"label space ({len(s['label_space'])}): {', '.join(s['label_space'])}")
    if s["rare_labels"]:
        console.print(
            f"[yellow]not learnable (< {s['min_images']} images):[/] "
            + ", ".join(f"{n} ({c})" for n, c in s["rare_labels"].items())
        )
    if s["outside_label_space"]:
        console.print(
            "findings outside the label space (images): "
            + ", ".join(f"{n} ({c})" for n, c in s["outside_label_space"].items())
            + f"; {s['images_without_label_in_space']} image(s) have no positive label in it"
        )
    if s["unknown_labels"]:  # which source annotates which label
        policy, sources = s["label_policy"], list(s["annotation"])
        table = Table(
            title="what each source annotates: positive/negative/unknown images "
            f"(uncertain: {policy['uncertain']}, not mentioned: {policy['unmentioned']})"
        )
        table.add_column("label")
        for source in sources:
            table.add_column(source, justify="right")
        labels: list[str] = list(s["annotation"][sources[0]]) if sources else []
        for label in labels:
            counts = [s["annotation"][source][label] for source in sources]
            table.add_row(
                label,
                *("-" if c["unknown"] and not (c["positive"] or c["negative"]) else
                  f"{c['positive']}/{c['negative']}/{c['unknown']}" for c in counts),
            )  # fmt: skip
        console.print(table)
        console.print("(-: the source does not annotate the label: unknown for its images, not negative)")
    for note in s["notes"]:
        console.print(f"note: {note}")
    if s["problems"]:
        console.print(f"[red]{len(s['problems'])} problem(s), skipped:[/]")
        for problem in s["problems"]:
            console.print(f"  {problem}", markup=False)


@app.command("prepare")
def prepare_cmd(
    ctx: typer.Context,
    data: DataOpt = None,
    config: ConfigOpt = None,
    size: Annotated[int | None, typer.Option("--size", help="output size N (N x N)")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="cache folder (default ~/.cache/cxrlens)")] = None,
    output_format: Annotated[
        str | None,
        typer.Option("--format", help="cache (one machine; the default) or streaming (LitData shards, --out DIR)"),
    ] = None,
    streaming: Annotated[
        Path | None, typer.Option("--out", "-o", help="the shards' folder (data.streaming; implies --format streaming)")
    ] = None,
    node_rank: Annotated[
        int | None, typer.Option("--node-rank", help="streaming: this node's part (default $DATA_OPTIMIZER_NODE_RANK)")
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option("--nodes", help="streaming: nodes sharing it (default $DATA_OPTIMIZER_NUM_NODES)"),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="processes (default: every usable core; one for a few dozen images)")
    ] = 0,
    skip_bad: SkipOpt = False,
    assignments: SetOpt = None,
) -> None:
    """Preprocess every image once into the cache that training reads, or into streaming shards."""
    cfg = resolve(ctx, config).data
    kind = output_format or ("streaming" if cfg.streaming else "cache")
    if kind not in ("cache", "streaming"):
        raise ConfigError(f"--format {kind!r}: choose cache or streaming")
    dataset = load_dataset(cfg=cfg)
    if kind == "streaming":
        if not cfg.streaming:
            raise ConfigError("--format streaming needs --out DIR (or data.streaming in the config)")
        share = node_share(node_rank, nodes)
        console.print(f"node {share.rank} of {share.count}: preprocessing its share of {len(dataset)} images")
        shards = write_shards(dataset.records, cfg.preprocess, cfg.streaming, share, workers or None)
        failed, done = shards.failed, f"{shards.written} written, {shards.reused} already in the shards"
        where = shards.part
    else:
        cached = PreprocessCache(cfg.preprocess, cfg.cache_dir)
        with progress_bar(f"preprocessing to {cfg.preprocess.size}px", len(dataset)) as advance:
            report = cached.prepare(dataset.records, workers=workers or None, progress=advance)
        failed, done, where = report.failed, f"{report.written} written, {report.reused} already cached", cached.dir
    if failed and not cfg.skip_bad:
        raise DataError(f"{failed[0]} ({len(failed)} image(s) failed; pass --skip-bad to skip them)")
    for failure in failed:
        err_console.print(f"skipped: {failure}", markup=False)
    console.print(f"{done}, {len(failed)} skipped, {len(dataset.problems)} bad row(s) skipped -> {where}")


@app.command("split")
def split_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="splits CSV to write")],
    data: DataOpt = None,
    config: ConfigOpt = None,
    folds: Annotated[int, typer.Option("--folds", help="folds (kfold) or repeats (holdout)")] = 5,
    scheme: Annotated[str, typer.Option("--scheme", help="kfold, holdout or by-source")] = "kfold",
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="holdout test share")] = 0.4,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="validation share of train")] = 0.1,
    split_seed: Annotated[int, typer.Option("--seed")] = 0,
    external_fraction: Annotated[
        float | None, typer.Option("--external-fraction", help="share of patients held out of every fold")
    ] = None,
    external_out: Annotated[
        Path | None, typer.Option("--external-out", help="folder for the held-out patients' images + metadata.csv")
    ] = None,
    skip_bad: SkipOpt = False,
    labels: PresetOpt = None,
    min_images: MinOpt = None,
    assignments: SetOpt = None,
) -> None:
    """Patient-grouped, label-stratified folds: CSV filename,patient_id,fold,subset."""
    resolved = resolve(ctx, config)
    cfg, split_cfg = resolved.data, resolved.cv.split
    dataset = load_dataset(cfg=cfg)
    space, _ = choose_labels(
        [r.labels for r in dataset.records], cfg.labels.preset, cfg.labels.names, cfg.labels.min_images
    )
    if split_cfg.external_fraction > 0:
        if external_out is None:
            raise ConfigError("--external-fraction needs --external-out DIR (where the held-out images go)")
        dataset, held = hold_out(dataset, space, split_cfg.external_fraction, split_cfg.seed)
        metadata = write_dataset_folder(held, external_out)
        console.print(
            f"held out {len(held)} images of {len(held.patients)} patients -> {metadata} (an external set from "
            f"the same sources: {', '.join(sorted({r.source for r in held.records}))})"
        )
    rows = make_splits(dataset, space, split_cfg)
    digest = write_splits(rows, out)
    counts = split_counts(rows, dataset, space)
    fold_ids = sorted({int(str(c["fold"])) for c in counts})
    table = Table(title=f"{split_cfg.scheme}: images per fold as train/val/test")
    table.add_column("")
    tested = fold_sources(dataset) if split_cfg.scheme == "by-source" else []
    for fold in fold_ids:
        table.add_column(f"fold {fold}" + (f" (tests {tested[fold]})" if tested else ""), justify="right")
    for key in ["images", "patients", *space.names]:
        cells = []
        for fold in fold_ids:
            by_subset = {c["subset"]: c[key] for c in counts if c["fold"] == fold}
            cells.append("/".join(str(by_subset.get(s, 0)) for s in ("train", "val", "test")))
        table.add_row(key, *cells)
    console.print(table)
    for fold, missing in absent_training_labels(rows, dataset, space).items():
        err_console.print(f"fold {fold}: no training image of {', '.join(missing)} (its models cannot learn them)")
    console.print(f"wrote {out} ({len(rows)} rows, sha256 {digest})")
