"""The asv suite: the bench matrix tracked over commits (see asv.conf.json and README "Tracking regressions")."""
