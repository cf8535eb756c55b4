"""Inverted representations (Mahendran & Vedaldi 2015):
`python -m experiments.invert [key=value ...]`.

The work is `deconvnet.jobs.invert.run_invert`; this module only passes the config. Files in
the job's own folder: `input.png`, `from_stage<s>.png` / `from_fc6.png` (one per stage), images.npz
(raw images, normalised input space, float32), grid.png, result.json and config.yaml (resolved;
Hydra's own copy is in `.hydra/`).

    python -m experiments.invert model.weights=hed image=coffee
    python -m experiments.invert model=alexnet stages=[2,5,fc7] steps=100 size=160
    python -m experiments.invert -m image=cat,coffee             # a folder a job

Config keys (conf/invert.yaml): model=<any supported model> with model.weights and model.seed; image (a
sample name or path); stages (1..5, fc6, fc7; a list); steps; lr; size (null = 224); tv_weight
(null = per stage); jitter; seed (the start's); device. Each inversion is titled with its relative
feature error. Every value is checked before the model is built; a bad one ends the run with one
line `error: <key>: expected ..., got ...` and exit status 1. Finished cells are kept in
`partial/`: a rerun with the same config into the same folder resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="invert")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `invert` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("invert", cfg)


if __name__ == "__main__":
    main()
