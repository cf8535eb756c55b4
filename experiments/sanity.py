"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018), the model parameter
randomisation test: `python -m experiments.sanity [key=value ...]`.

The work is `deconvnet.jobs.sanity.run_sanity`; this module only passes the config.
Files in the job's own folder: curves.png (one panel per similarity metric and mode, one curve per
method), cascade_<image>.png (the maps along the cascade), images.npz (inputs, original maps,
similarities), result.json (every setting, the curves, which methods pass) and config.yaml
(resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.sanity model.weights=hed
    python -m experiments.sanity model=alexnet model.weights=random size=96 modes=cascading
    python -m experiments.sanity model.weights=hed layers=[conv5_3,conv4_1,conv3_1,conv1_1]

Config keys (conf/sanity.yaml): model=<any supported model> with model.weights and model.seed; images;
methods; unit ([stage], [stage, channel], [stage, channel, y, x], or null: the predicted class);
modes (cascading, independent); layers (null = every learnable layer); size; samples, noise,
noise_seed (SmoothGrad); steps (integrated gradients); cam_stage (Grad-CAM); seed (the
re-initialisation); pass_layer, pass_below, pass_metric (the pass criterion); device. Every
value is checked before the model is built; a bad one ends the run with one line
`error: <key>: expected ..., got ...` and exit status 1. Finished steps are kept in
`partial/`: a rerun with the same config into the same folder resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="sanity")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `sanity` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("sanity", cfg)


if __name__ == "__main__":
    main()
