"""Experiments: Hydra entry points (`python -m experiments.<name>`) over the `deconvnet` library.

Each module has a plain `run_<name>(...)` function that does the work (tests call it directly) and a
thin `main` that converts the Hydra config (conf/<name>.yaml) into its arguments.
"""
