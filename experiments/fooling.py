"""Fooling images (Nguyen et al. 2015): `python -m experiments.fooling [key=value ...]`.

The work is `deconvnet.jobs.fooling.run_fooling`; this module only passes the config. Files in
the job's own folder: `<image>__input.png`, `<image>__fooling.png`, `<image>__difference.png`,
images.npz (raw images, normalised input space, float32), grid.png, result.json and config.yaml
(resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.fooling images=[cat,coffee] target=zebra
    python -m experiments.fooling model=alexnet confidence=0.9 steps=100 amplify=20
    python -m experiments.fooling -m target=1,368                # a folder a job

Config keys (conf/fooling.yaml): model=<any supported model> with model.weights and model.seed; images
(sample names / paths, or one); target (a class int or name); confidence (0..1); steps (at most);
step (sign: every colour value moves by lr along the gradient's sign | normalized: the old
L2-normalised step); lr (null = the rule's default: 1/255 per colour value for sign);
max_change (the largest change of any colour value, 8/255 by default; null = no budget); size
(null = 224); amplify (the difference panel's factor); seed; device. A confidence not
reached is said in the panel and result.json; a random classifier (weights random or hed) is
labelled as such. Every value is checked before the model is built; a bad one ends the run with one
line `error: <key>: expected ..., got ...` and exit status 1. Finished cells are kept in
`partial/`: a rerun with the same config into the same folder resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="fooling")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `fooling` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("fooling", cfg)


if __name__ == "__main__":
    main()
