"""Correspondence analysis (Zeiler & Fergus 2014, Table 1):
`python -m experiments.correspondence [key=value ...]`.

The work is `deconvnet.jobs.correspondence.run_correspondence`; this module only passes
the config. Files in the job's own folder: table.md (the table, markdown), result.json (every
number, setting and box, provenance), boxes.png (each image with its part boxes, each occlusion
and a random one as the model sees them) and its tiles, images.npz (inputs and per-pair
distances), config.yaml (resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.correspondence model.weights=hed
    python -m experiments.correspondence model=alexnet layers=[3,5,fc7] random_draws=20
    python -m experiments.correspondence boxes=/path/to/my_boxes.yaml

Config keys (conf/correspondence.yaml): model=<any supported model> with model.weights and model.seed;
boxes (a box file: a name in conf/correspondence/ or a path); layers (stages, stage names, module paths, logits; fc6, fc7 on VGG / AlexNet; a list; null = the model's default);
random_draws; seed (the random boxes'); fill (the occluder's value); batch_size; device. Every
value is checked before the model is built; a bad one ends the run with one line
`error: <key>: expected ..., got ...` and exit status 1. Finished parts are kept in `partial/`:
a rerun with the same config into the same folder resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="correspondence")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `correspondence` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("correspondence", cfg)


if __name__ == "__main__":
    main()
