"""The asv suite: the bench matrix tracked over commits (asv.conf.json; README, "Tracking regressions")."""
