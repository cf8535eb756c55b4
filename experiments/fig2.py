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

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="fig2")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `fig2` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("fig2", cfg)


if __name__ == "__main__":
    main()
