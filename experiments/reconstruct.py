"""Reconstruct one image at the paper's layers: `python -m experiments.reconstruct [key=value ...]`.

Default job: VGG16 (ImageNet weights if cached, else RANDOM with a warning), the sample image `cat`,
all five stages, each projected from the whole feature map (keep=all) and from its single strongest
activation (keep=max), rule deconvnet. Into the job's own folder it writes `input.png`,
`stage<n>_<keep>.png` (keep: all | max | ch<c>), `overview.png`, `result.json`, `config.yaml`
(resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.reconstruct stage=3 keep=max              # one reconstruction
    python -m experiments.reconstruct model=alexnet keep=12 rule=guided
    python -m experiments.reconstruct -m stage=1,2,3,4,5 keep=all,max  # sweep, a folder per job

Config keys (conf/reconstruct.yaml): model=vgg16|alexnet with model.weights=auto|imagenet|random|
<checkpoint.pth> and model.seed; image=<path or sample name>; stage=1..5 or null (all five);
keep=all|max|<channel int> or null (all and max); rule=deconvnet|backprop|guided; device=cpu|cuda.
Every value is checked before the model is built; a bad one ends the run with one line
`error: <key>: expected ..., got ...` and exit status 1. The work is
`deconvnet.jobs.reconstruct.run_reconstruct`; this module only passes the config.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="reconstruct")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `reconstruct` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("reconstruct", cfg)


if __name__ == "__main__":
    main()
