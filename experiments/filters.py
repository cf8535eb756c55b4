"""Filter visualisations per stage, without and with regularisers:
`python -m experiments.filters [key=value ...]`.

The work is `deconvnet.jobs.filters.run_filters`; this module only passes the config. Files in
the job's own folder: `stage<s>__plain.png` and `stage<s>__regularized.png` (the Keras example's n
x n mosaics), images.npz (raw images, normalised input space, float32), grid.png, result.json and
config.yaml (resolved; Hydra's own copy is in `.hydra/`).

    python -m experiments.filters model.weights=hed            # learned VGG16 convolutions
    python -m experiments.filters model=alexnet stages=[2,5] channels=[0,3,7] size=128
    python -m experiments.filters -m param=pixels,fourier     # a folder a job

Config keys (conf/filters.yaml): model=<any supported model> with model.weights and model.seed; stages
(1..5 or a list); channels (a count n: the first n channels, or a list); size; steps; lr; seed (the
starts' and jitter's); param=pixels|fourier; device=cpu|cuda. Regularised variant: Yosinski's decay
+ blur, pad + jitter of size // 16 px (`deconvnet.jobs.filters`). Every value is checked
before the model is built; a bad one ends the run with one line `error: <key>: expected ..., got
...` and exit status 1. Finished cells are kept in `partial/`: a rerun with the same config into
the same folder resumes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="filters")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `filters` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("filters", cfg)


if __name__ == "__main__":
    main()
