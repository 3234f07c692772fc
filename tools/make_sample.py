"""Build the embedded sample (src/cxrlens/sample) from the shared data folder.

Run once by a maintainer: ``python tools/make_sample.py /path/to/shared/data/cxr``.
Only images whose licence allows redistributing a modified copy are taken (Kermany CC BY 4.0;
Cohen CC BY, CC BY 3.0, CC BY 4.0, CC BY-SA), downscaled so the longer side is at most 512 px.
"""

from __future__ import annotations

import csv
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image

REDISTRIBUTABLE = {"CC BY", "CC BY 3.0", "CC BY 4.0", "CC BY-SA"}
MAX_SIDE = 512
PLAN = [  # (source, finding, how many) - distinct patients where possible
    ("kermany", "No Finding", 12),
    ("kermany", "Pneumonia/Viral", 8),
    ("kermany", "Pneumonia/Bacterial", 10),
    ("cohen", "Pneumonia/Viral/COVID-19", 10),
    ("cohen", "No Finding", 4),
    ("cohen", "Pneumonia/Fungal/Pneumocystis", 2),
    ("cohen", "ARDS", 1),
]
FOLLOW_UP_PATIENT = "cohen-253"  # four follow-up images of one COVID-19 patient (Fig. 13-style)
FOLLOW_UP_OFFSETS = {"5", "9", "21", "30"}
COLUMNS = [
    "filename",
    "patient_id",
    "finding",
    "view",
    "source",
    "license",
    "offset",
    "date",
    "sex",
    "age",
    "doi",
    "url",
    "source_repo",
    "source_commit",
    "source_path",
    "sha256",
    "lung_mask",
]


def pick(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    rng = random.Random(20261122)
    chosen: list[dict[str, str]] = []
    follow = [r for r in rows if r["patient_id"] == FOLLOW_UP_PATIENT and r["offset"] in FOLLOW_UP_OFFSETS]
    follow = sorted({r["offset"]: r for r in follow}.values(), key=lambda r: int(r["offset"]))
    chosen.extend(follow)
    used_patients = {FOLLOW_UP_PATIENT}
    for source, finding, count in PLAN:
        pool = [r for r in rows if r["source"] == source and r["finding"] == finding]
        pool.sort(key=lambda r: (r["lung_mask"] == "", r["filename"]))  # images with masks first
        head = [r for r in pool if r["lung_mask"]]
        tail = [r for r in pool if not r["lung_mask"]]
        rng.shuffle(head)
        rng.shuffle(tail)
        taken = 0
        for row in head + tail:
            if taken == count:
                break
            if row["patient_id"] in used_patients:
                continue
            used_patients.add(row["patient_id"])
            chosen.append(row)
            taken += 1
    return chosen


def shrink(src: Path, dst: Path, nearest: bool = False) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as img:
        img.load()
        scale = MAX_SIDE / max(img.size)
        if scale < 1:
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
            img = img.resize(size, resample)
        if dst.suffix.lower() in {".jpg", ".jpeg"}:
            img.convert("L" if img.mode in {"L", "LA"} else "RGB").save(dst, quality=90)
        else:
            img.save(dst, optimize=True)


def main(shared: Path, out: Path) -> None:
    with (shared / "metadata.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["license"] in REDISTRIBUTABLE]
    chosen = pick(rows)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    counts: dict[str, int] = defaultdict(int)
    for row in chosen:
        shrink(shared / row["filename"], out / row["filename"])
        if row["lung_mask"]:
            shrink(shared / row["lung_mask"], out / row["lung_mask"], nearest=True)
        counts[row["finding"]] += 1
    with (out / "metadata.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(chosen)
    write_readme(out / "README.md", chosen, counts)
    print(f"{len(chosen)} images: {dict(counts)}")


def write_readme(path: Path, chosen: list[dict[str, str]], counts: dict[str, int]) -> None:
    lines = [
        "# The cxrlens embedded sample",
        "",
        f"{len(chosen)} real frontal chest X-rays for the demo and the fast tests, downscaled (bicubic) so the",
        f"longer side is at most {MAX_SIDE} px; lung masks (where present) resized with nearest-neighbour.",
        "Built by `tools/make_sample.py` from the project's staged copy of the two public collections below.",
        "Only images whose licence allows redistributing a modified copy were taken.",
        "",
        "| finding | images |",
        "|---|---:|",
        *[f"| {finding} | {n} |" for finding, n in sorted(counts.items())],
        "",
        "## Sources and licences",
        "- **Kermany et al.**, Chest X-Ray Images (Pneumonia), Mendeley Data v2, doi:10.17632/rscbjbr9sj.2,",
        "  **CC BY 4.0**; Kermany et al., Cell 172(5):1122-1131 (2018). Paediatric images (ages 1-5).",
        "- **Cohen et al.**, COVID-19 image data collection (github.com/ieee8023/covid-chestxray-dataset),",
        "  arXiv:2006.11988; each image under the licence listed below (CC BY, CC BY 3.0 or CC BY-SA;",
        "  the CC BY-SA image and its downscaled copy stay under CC BY-SA). Adult images.",
        "- **Lung masks**: V7 Labs lung annotations of the Cohen collection (github.com/v7labs/covid-19-xray-dataset,",
        "  CC BY 4.0), as shipped in the torchxrayvision 1.5.7 wheel.",
        "",
        "Changes made: downscaled; JPEG re-encoded at quality 90; nothing else (annotations burned into",
        "Cohen images are still there). `sha256` in metadata.csv is that of the original file.",
        "",
        "## Images",
        "| file | patient | finding | licence | source | original |",
        "|---|---|---|---|---|---|",
    ]
    for row in chosen:
        lines.append(
            f"| {row['filename']} | {row['patient_id']} | {row['finding']} | {row['license']} | "
            f"{row['source_repo'].split(' ')[0]} | {row['source_path']} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "src" / "cxrlens" / "sample")
