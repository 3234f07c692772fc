"""The run folder, the contract between the stages: every path and file format of a run (``layout``), typed
readers and writers (``info``, ``predictions``, ``thresholds``, ``maps``), a read-only :func:`open_run` apart
from :func:`create_run`, and the fold loader (:class:`ModelBank` + :class:`ImageSource`).

Stages read and write a run only through this package (docs/architecture.md).
"""

from cxrlens.run.create import Study, create_run
from cxrlens.run.folder import Run, open_run
from cxrlens.run.images import ImageSource, LabelledImages
from cxrlens.run.layout import RunLayout
from cxrlens.run.models import ModelBank, load_checkpoint

__all__ = [
    "ImageSource",
    "LabelledImages",
    "ModelBank",
    "Run",
    "RunLayout",
    "Study",
    "create_run",
    "load_checkpoint",
    "open_run",
]
