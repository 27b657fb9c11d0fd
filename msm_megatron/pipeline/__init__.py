"""``msm pipeline``: one experiment file → a graph of stages, run locally or on Slurm."""
