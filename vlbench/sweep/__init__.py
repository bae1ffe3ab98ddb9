"""Sweeps: a grid of runs planned into shared work and runs (plan.py), executed locally or on SLURM
(executors.py). The sweep file itself is read by vlbench/config.py."""
