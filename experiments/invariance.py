"""Invariance to vertical translation, scale and rotation (Zeiler & Fergus 2014, Fig. 5):
`python -m experiments.invariance [key=value ...]`.

The work is `deconvnet.jobs.invariance.run_invariance`; this module only passes the
config. Files in the job's own folder: `invariance.png` (the paper's 3 x 4 panel figure: rows =
transformations; columns = the images under the transformation, the Euclidean distance of the
feature vectors original vs transformed at layer 1 and at layer 7 (fc7), the probability of the
label), `<transform>_examples.png`, invariance.npz (inputs and every curve), result.json and
config.yaml (resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.invariance model.weights=hed
    python -m experiments.invariance transforms=[rotate] values.rotate=[0,45,90,135,180]
    python -m experiments.invariance model=alexnet layers=[2,5,fc6,fc7] images=[cat,coffee]

Config keys (conf/invariance.yaml): model=<any supported model> with model.weights and model.seed; images
(sample names or paths); transforms (translate, scale, rotate); values.translate / values.scale /
values.rotate (null = the paper's ranges: -60..60 px every 10, 1.0..1.8 every 0.1, 0..360
degrees every 15); layers (stages, stage names, module paths, logits; fc6, fc7 on VGG / AlexNet; null = the model's default); labels (null = each original's predicted class, or
one class per image); fill (the uncovered area in the normalised input; 0 = the mean colour);
size (null = 224); batch_size; shown (amounts drawn per row in column (a)); device. Every value
is checked before the model is built; a bad one ends the run with one line
`error: <key>: expected ..., got ...` and exit status 1. Finished transformations are kept in
`partial/`: a rerun with the same config into the same folder resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="invariance")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `invariance` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("invariance", cfg)


if __name__ == "__main__":
    main()
