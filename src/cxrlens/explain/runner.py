"""`cxrlens explain`: every chosen method x model x label for the chosen images, resumable.

Work is sharded over devices and nodes by Lightning's predict loop (DDP on a cluster; one CPU process here);
each rank computes and writes its own maps (atomic writes), then rank 0 writes the index and the figures.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from cxrlens.config import ExplainConfig
from cxrlens.explain.compute import Engine
from cxrlens.explain.figures import draw_figures
from cxrlens.explain.plan import make_plan
from cxrlens.lightning_setup import parse_devices, quiet_lightning
from cxrlens.run import Run


@dataclass(frozen=True)
class ExplainSummary:
    images: int
    models: tuple[str, ...]
    methods: tuple[str, ...]
    maps_written: int  # computed now, by every rank
    maps_total: int  # in the index
    seconds: float
    figures: tuple[str, ...]
    index: str
    followup_patient: str | None
    not_applicable: tuple[str, ...]  # "<method> on <model>: <why>"


class _Indices(Dataset[int]):
    """0 .. n-1: the plan's items, which the distributed sampler shards over the ranks."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class ExplainModule(L.LightningModule):
    """Lightning's predict loop as a sharding engine: each step explains one image of the plan."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> int:
        self.engine.move_to(self.device)
        written = 0
        with torch.enable_grad():  # Lightning predicts without autograd; gradient methods need it
            for index in batch.tolist():
                written += self.engine.explain_item(self.engine.plan.items[int(index)])
        return written


def run_explain(run: Run, cfg: ExplainConfig, enable_progress_bar: bool = True) -> ExplainSummary | None:
    """Plan, compute (sharded over ranks), then index and draw figures on rank 0 (None on the other ranks)."""
    plan = make_plan(run, cfg)
    engine = Engine(plan)
    # one item per step, in fold order, so each rank loads each fold's models once
    loader = DataLoader(_Indices(len(plan.items)), batch_size=1, shuffle=False)
    quiet_lightning()
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=parse_devices(cfg.devices),
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        logger=False,
        inference_mode=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        use_distributed_sampler=True,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*treespec.*")
        outputs = trainer.predict(ExplainModule(engine), loader, return_predictions=True)
    mine = torch.tensor(float(sum(outputs or [])), device=trainer.strategy.root_device)  # type: ignore[arg-type]
    written = int(trainer.strategy.reduce(mine, reduce_op="sum").item())  # every rank's maps, not rank 0's
    trainer.strategy.barrier()
    engine.images.close()
    if not trainer.is_global_zero:
        return None
    entries = engine.store.write_index()
    figures = draw_figures(plan, entries) if cfg.figures else []
    return ExplainSummary(
        images=len(plan.items),
        models=tuple(plan.models),
        methods=tuple(m.name for m in plan.methods),
        maps_written=written,
        maps_total=len(entries),
        seconds=round(time.perf_counter() - start, 1),
        figures=tuple(str(p) for p in figures),
        index=str(engine.store.index_path),
        followup_patient=plan.followup_patient,
        not_applicable=tuple(f"{method} on {model}: {why}" for model, method, why in plan.not_applicable),
    )
