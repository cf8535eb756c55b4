"""Deep Dream (Mordvintsev et al. 2015): `python -m experiments.deep_dream [key=value ...]`.

The work is `deconvnet.jobs.deep_dream.run_deep_dream`; this module only passes the config. Files
in the job's own folder: `<image>__input.png`, `<image>__dream.png`, images.npz (raw images,
normalised input space, float32), grid.png, result.json and config.yaml (resolved; Hydra's own copy
is in `.hydra/`).

    python -m experiments.deep_dream model.weights=hed images=[cat,coffee] stage=3
    python -m experiments.deep_dream model=alexnet stage=5 channel=12 octaves=3
    python -m experiments.deep_dream -m stage=3,4,5              # a folder a job

Config keys (conf/deep_dream.yaml): model=<any supported model> with model.weights and model.seed; images
(sample names / paths, or one); stage (1..5); channel (null = all); octaves; scale; jitter; steps
(per octave); step_size; size (null = 224); seed (the jitter's); device. result.json: energy 0.5
||a||^2 before / after. Every value is checked before the model is built; a bad one ends the run
with one line `error: <key>: expected ..., got ...` and exit status 1. Finished cells are kept in
`partial/`: a rerun with the same config into the same folder resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="deep_dream")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `deep_dream` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("deep_dream", cfg)


if __name__ == "__main__":
    main()
