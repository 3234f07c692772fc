"""External validation: the run's models on data from elsewhere (``cxrlens evaluate-external``)."""
