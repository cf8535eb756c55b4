"""The faithfulness table: `python -m experiments.faithfulness [key=value ...]`.

The work is `deconvnet.jobs.faithfulness.run_faithfulness`; this module only passes the config.
Files in the job's own folder: table.md (every method's deletion and insertion AUC, mean ± std
over the photos, and its sanity-check verdict), result.json (every number per image, settings,
provenance), curves.png (mean curves), grid.png (each method's pixel scores over each photo) and
its tiles, images.npz (scores and curves), config.yaml (resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.faithfulness                         # EfficientNet-Lite0, ImageNet weights
    python -m experiments.faithfulness methods=[gradcam,lrp,random] steps=50 sanity=false
    python -m experiments.faithfulness model=alexnet images=[cat]

Config keys (conf/faithfulness.yaml): model=<any supported model> with model.weights and
model.seed; images; methods; steps; baseline; batch_size; stage; samples; noise;
integrated_steps; patch; stride; sanity; seed; device. Every value is checked before the model is
built; a bad one ends the run with one line `error: <key>: expected ..., got ...` and exit status
1. Finished methods are kept in `partial/`: a rerun with the same config into the same folder
resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="faithfulness")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `faithfulness` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("faithfulness", cfg)


if __name__ == "__main__":
    main()
