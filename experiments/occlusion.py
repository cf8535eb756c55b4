"""Occlusion sensitivity (Zeiler & Fergus Fig. 7): `python -m experiments.occlusion [key=value ...]`.

The work is `deconvnet.jobs.occlusion.run_occlusion`; this module only passes the config.
Files in the job's own folder: `input_<image>.png`, occlusion.png (panels (a)..(e) per image),
images.npz (raw maps: `<image>__probability`, `__feature`, `__label` [1, ny, nx],
`__projections`), result.json and config.yaml (resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.occlusion model.weights=hed
    python -m experiments.occlusion model=alexnet images=[cat,coffee] patch=32 stride=8
    python -m experiments.occlusion -m images=cat,coffee             # a folder a job

Config keys (conf/occlusion.yaml): model=<any supported model> with model.weights and model.seed; images;
target (null = predicted class); patch; stride; fill; size; top_k; data (the scan's dataset);
method=incremental|brute; batch_size; device. Every value is checked before the model is built;
a bad one ends the run with one line `error: <key>: expected ..., got ...` and exit status 1.
Finished cells are kept in `partial/`: a rerun with the same config into the same folder resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="occlusion")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `occlusion` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("occlusion", cfg)


if __name__ == "__main__":
    main()
