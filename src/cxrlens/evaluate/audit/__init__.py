"""The confounder audit (``cxrlens audit``): can each label be told apart from where an image comes from?

In the paper's data every COVID-19 image is an adult from the Cohen collection and nearly every normal image a
child from the Kermany set, so a model can score by recognising the collection (DeGrave et al., Nat. Mach.
Intell. 2021; Roberts et al., Nat. Mach. Intell. 2021). For each metadata column (source, view, sex, age group)
the audit looks in three places:

1. the data (:mod:`.data_check`): does the column alone predict the label?
2. the models' behaviour (:mod:`.behaviour`): does the out-of-fold AUROC survive within each value of it?
3. the models' representation (:mod:`.probe`, :mod:`.tcav`): can the column be read from the features, and
   does a label's logit rise along the direction of one of its values?

Main entry point: :func:`cxrlens.evaluate.audit.runner.run_audit` (imported from there: it loads torch).
"""
