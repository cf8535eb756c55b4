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

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from deconvnet.core.validation import check_device
from deconvnet.jobs.fig1 import run_fig1
from deconvnet.jobs.files import provenance
from experiments.common import hydra_output_dir, user_errors

log = logging.getLogger("experiments.fig1")


@hydra.main(version_base="1.3", config_path="../conf", config_name="fig1")
def main(cfg: DictConfig) -> None:
    with user_errors(log):
        if cfg.rule != "deconvnet":
            raise ValueError(
                f"rule: Fig. 1 is the deconvnet; expected 'deconvnet', got {cfg.rule!r}"
                " (other rules: python -m experiments.reconstruct rule=...)"
            )
        device = check_device(cfg.device)
        out = hydra_output_dir()
        result = run_fig1(
            out,
            model=cfg.model.name,
            weights=cfg.model.weights,
            seed=cfg.model.seed,
            image=cfg.image,
            stage=cfg.stage,
            channel=cfg.channel,
            keep=cfg.keep,
            below_channel=cfg.below_channel,
            device=str(device),
            extra={"config": OmegaConf.to_container(cfg, resolve=True), "provenance": provenance()},
        )
        log.info(
            "%s stage %s channel %s (%s): %s",
            result["model"],
            result["stage"],
            result["channel"],
            result["weights"]["description"],
            out / result["files"]["figure"],
        )


if __name__ == "__main__":
    main()
