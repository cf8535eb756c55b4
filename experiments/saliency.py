"""A grid of gradient-family maps for one target: `python -m experiments.saliency [key=value ...]`.

Default job: VGG16 (ImageNet weights if cached, else RANDOM with a warning), four bundled sample
images, every method of `deconvnet.METHODS`, each image's predicted class. Into the job's own
folder it writes `<image>__input.png`, `<image>__<method>.png`, `maps.npz` (raw maps, float32, key
`<image>__<method>`), `grid.png`, `result.json` and `config.yaml` (resolved; Hydra's own copy is
in `.hydra/`). The work is `deconvnet.jobs.saliency.run_saliency`; this module only passes the config.

    python -m experiments.saliency model.weights=hed unit=[5]        # learned convolutions
    python -m experiments.saliency model=alexnet images=cat methods=[gradient,guided] target=281
    python -m experiments.saliency -m images=cat,coffee methods=gradient,gradcam  # a folder a job

Config keys (conf/saliency.yaml): model=vgg16|alexnet with model.weights and model.seed;
images=<name or path> or a list; methods=null (all) | name | list; target=null | class int;
unit=null | [stage] | [stage, channel] | [stage, channel, y, x] (not with target); samples, noise
(SmoothGrad), steps (integrated gradients), cam_stage (Grad-CAM), seed (SmoothGrad's noise),
device=cpu|cuda. Every value is checked before the model is built; a bad one ends the run with one
line `error: <key>: expected ..., got ...` and exit status 1.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="saliency")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `saliency` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("saliency", cfg)


if __name__ == "__main__":
    main()
