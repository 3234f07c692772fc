"""Model registry, weights, checkpoints and ensembles."""

from cxrlens.models.registry import CxrClassifier, ModelSpec, count_parameters, create_model, get_spec, model_names

__all__ = ["CxrClassifier", "ModelSpec", "count_parameters", "create_model", "get_spec", "model_names"]
