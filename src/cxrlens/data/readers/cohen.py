"""Cohen's covid-chestxray-dataset ``metadata.csv``: ``patientid, finding, view, modality, folder, filename``.

Frontal X-rays are kept; CT, lateral views and ``todo`` rows are dropped and counted. Flat (``COVID-19, ARDS``)
and hierarchical (``Pneumonia/Viral/COVID-19``) findings. Annotates the paper's tree (nothing unknown there).
"""

from __future__ import annotations

from pathlib import Path

from cxrlens.config import DataConfig
from cxrlens.data.readers.base import ReadContext, Source, normal_sex, read_csv_rows, with_paper_unknown
from cxrlens.data.records import ImageRecord

REQUIRED = ("patientid", "finding", "view", "modality", "folder", "filename")


def matches(header: list[str]) -> bool:
    return set(REQUIRED) <= set(header)


class CohenCsv(Source):
    layout = "cohen"

    def __init__(self, location: Path, cfg: DataConfig) -> None:
        super().__init__(location, cfg)
        _, self.rows = read_csv_rows(location)

    def read(self, ctx: ReadContext) -> list[ImageRecord]:
        csv_path, root = self.location, self.location.parent
        records: list[ImageRecord] = []
        dropped = {"not an X-ray": 0, "not a frontal view": 0, "not yet labelled": 0}
        for line, row in self.rows:
            where = f"{csv_path.name}:{line}"
            if row["modality"].lower() not in {"x-ray", "xray", "cr", "dx"}:
                dropped["not an X-ray"] += 1
                continue
            if not ctx.kept_view(row["view"]):
                dropped["not a frontal view"] += 1
                continue
            if ctx.hierarchy.is_unlabelled(row["finding"]):
                dropped["not yet labelled"] += 1
                continue
            labels = ctx.labels(row["finding"], where)
            relative = f"{row['folder']}/{row['filename']}" if row["folder"] else row["filename"]
            path = ctx.image_path(root, relative, where)
            if labels is None or path is None:
                continue
            records.append(
                ImageRecord(
                    filename=relative,
                    path=path,
                    patient_id=f"cohen-{row['patientid']}",
                    finding=row["finding"],
                    labels=labels,
                    view=row["view"],
                    source="cohen",
                    offset=row.get("offset", ""),
                    date=row.get("date", ""),
                    license=row.get("license", ""),
                    sex=normal_sex(row.get("sex", "")),
                    age=row.get("age", "").strip(),
                    origin=where,
                )
            )
        ctx.raise_unknown(csv_path)
        ctx.note_dropped(csv_path, dropped)
        return with_paper_unknown(records, ctx)
