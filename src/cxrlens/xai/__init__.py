"""The explanation-metrics stage (`cxrlens evaluate-explanations`): measures of the stored attribution maps.

Entry point: :func:`~cxrlens.xai.study.evaluate_explanations` (an opened run and its ``xai:`` config) ->
:class:`~cxrlens.xai.study.XaiResult`, whose ``to_dict()`` is what ``metrics.json`` holds.
"""

from cxrlens.xai.study import XaiResult, evaluate_explanations

__all__ = ["XaiResult", "evaluate_explanations"]
