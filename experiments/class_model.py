"""Class models (Simonyan et al. 2014): `python -m experiments.class_model [key=value ...]`.

The work is `deconvnet.jobs.class_model.run_class_model`; this module only passes the config.
Files in the job's own folder: `class<c>.png` (titled in grid.png with the class name and its
probability), images.npz (raw images, normalised input space, float32), grid.png, result.json and
config.yaml (resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.class_model model.weights=hed classes=[tabby,zebra]
    python -m experiments.class_model model=alexnet regularizer=l1 weight=0.01 blur=1.0
    python -m experiments.class_model -m regularizer=l2,l1,none   # a folder a job

Config keys (conf/class_model.yaml): model=<any supported model> with model.weights and model.seed; classes
(ints or names, or one; an item that is a list of classes makes one image for them together, the
soft minimum of their logits); regularizer=l2|l1|none; weight; steps; lr; size; blur (sigma every 4
steps, 0 none); seed; device. Weights random or hed have a random classifier: "class scores of a
RANDOM classifier: not meaningful" in the title and result.json. Every value is checked before the
model is built; a bad one ends the run with one line `error: <key>: expected ..., got ...` and exit
status 1. Finished cells are kept in `partial/`: a rerun with the same config into the same folder
resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="class_model")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `class_model` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("class_model", cfg)


if __name__ == "__main__":
    main()
