"""How a run's models are addressed beside their registry names: the ensembles."""

ENSEMBLE = "ensemble"  # a fold's models as one model: the mean of their probabilities (predict, explain, report)
ENSEMBLE_MEAN = "ensemble-mean"  # evaluated: mean probability, then thresholds (the paper's code)
ENSEMBLE_VOTE = "ensemble-vote"  # evaluated: strict majority of the members' decisions (the paper's text)
ENSEMBLE_NAMES = (ENSEMBLE_MEAN, ENSEMBLE_VOTE)
