"""The attribution engine: model preparation for captum, the method registry, batched perturbations, memory budget.

``prepare_model(model)`` returns a copy of a model that captum explains correctly (every ReLU call its own
non-in-place module, functional relu/max-pool as modules, a complete DeepLIFT max-pool rule).
"""

from cxrlens.attribution.prepare import check_prepared, prepare_model

__all__ = ["check_prepared", "prepare_model"]
