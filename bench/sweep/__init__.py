"""Sweeps: every run of a grid as its own submitit job (Slurm arrays, or local processes), and their status.

- jobs: the job (one `execute` of one config), the executor and the sweep loop
- state: options, the sweep's state file and the status afterwards
"""
