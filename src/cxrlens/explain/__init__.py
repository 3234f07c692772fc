"""Interpretability: model preparation, the attribution-method registry, the explain runner, NAP, metrics.

``prepare_model(model)`` returns a copy of a model that captum explains correctly (every ReLU call
its own non-in-place module, functional relu/max-pool as modules, an exact DeepLIFT max-pool rule).
"""

from cxrlens.explain.prepare import check_prepared, prepare_model

__all__ = ["check_prepared", "prepare_model"]
