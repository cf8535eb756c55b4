"""Fig. 1 of Zeiler & Fergus from real data: `python -m experiments.fig1 [key=value ...]`.

Default job: VGG16 (ImageNet weights if cached, else RANDOM with a warning), the sample image `cat`,
stage 1 (its last conv -> relu -> pool), the channel with the strongest activation, seeded with that
channel's single strongest pooled activation. Into the job's own folder it writes `fig1.png`,
`fig1_data.npz` (every panel + meta; `deconvnet.jobs.fig1.render_fig1(job_dir)` redraws the figure from
it without the model) and `result.json`.

    python -m experiments.fig1 model=alexnet stage=2 channel=17
    python -m experiments.fig1 keep=all                 # seed: the channel's whole pooled map
    python -m experiments.fig1 -m stage=1,2,3,4,5       # one folder per layer

Config keys (conf/fig1.yaml): model=vgg16|alexnet (model.weights, model.seed), image, stage=1..5,
channel=null|int, keep=max|all, below_channel=null|int, device=cpu|cuda, rule=deconvnet (fixed).
A bad value ends the run with one line `error: ...` and exit status 1, before the model is built.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="fig1")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `fig1` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("fig1", cfg)


if __name__ == "__main__":
    main()
