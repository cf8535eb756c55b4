"""Fig. 2 of Zeiler & Fergus: `python -m experiments.fig2 [key=value ...]`.

Default job: VGG16 (ImageNet weights if cached, else RANDOM with a warning), the offline sample
gallery, 16 random feature maps per layer (seed 0) among those that fire on at least 9 images,
layers 1-5, top 9 images per feature map (whole maps scanned), deconvnet rule.
Into the job's own folder it writes `fig2_stage<s>.png` per layer, the sheet `fig2.png`, `tiles.npz`
(raw tiles: `deconvnet.jobs.fig2.render_fig2(job_dir)` redraws every figure without the model),
`tiles.json` (provenance of every tile), `topk.pt` (the scan), `result.json`, `config.yaml`.

    python -m experiments.fig2 model=alexnet k=4 stages=[1,3] channels_per_stage=4
    python -m experiments.fig2 data=folder data.root=/data/imagenet/val model.weights=imagenet
    python -m experiments.fig2 "channels={1:[0,5],3:[7]}" stages=[1,3]
    python -m experiments.fig2 rules=[deconvnet,guided]      # each rule's reconstructions side by side
    python -m experiments.fig2 exclude_border=1 live_only=false
    python -m experiments.fig2 -m stage=1,2,3,4,5          # one job per layer (or stages=[1],[2])
    python -m experiments.fig2 scan=outputs/<date>/<time>  # a saved (merged) scan: no second scan

All the work is `deconvnet.jobs.fig2.run_fig2`; this module only maps the config onto its arguments.
A bad value ends the run with one line `error: <key>: ...` and exit status 1, before any scan.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from deconvnet.jobs.fig2 import run_fig2
from deconvnet.jobs.files import provenance
from experiments.common import run_job

log = logging.getLogger("experiments.fig2")


def arguments(cfg: DictConfig) -> dict:
    """The config as keyword arguments of `run_fig2` (without out_dir)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    stages = plain["stages"] if plain.get("stage") is None else [plain["stage"]]
    return {
        "model": plain["model"]["name"],
        "weights": plain["model"]["weights"],
        "seed": plain["model"]["seed"],
        "data": plain["data"],
        "stages": stages,
        "channels": plain.get("channels"),
        "channels_per_stage": plain["channels_per_stage"],
        "channel_seed": plain["channel_seed"],
        "k": plain["k"],
        "rules": plain["rules"],
        "live_only": plain["live_only"],
        "exclude_border": plain["exclude_border"],
        "batch_size": plain["batch_size"],
        "chunk_size": plain["chunk_size"],
        "device": plain["device"],
        "display": plain.get("display"),
        "progress": bool(plain.get("progress", True)),
        "scan": plain.get("scan"),
        "checkpoint_every": plain.get("checkpoint_every", 1000),
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="fig2")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: run Fig. 2 into this job's folder."""
    config = OmegaConf.to_container(cfg, resolve=True)
    run_job(
        log, cfg.device, lambda out: run_fig2(out, config=config, provenance=provenance(), **arguments(cfg))
    )


if __name__ == "__main__":
    main()
