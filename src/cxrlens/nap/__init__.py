"""The activation-profiles stage: label-expression groups, profiles per layer, their files and figures."""
