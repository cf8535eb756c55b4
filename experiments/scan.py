"""The dataset scan as a job: `python -m experiments.scan [key=value ...]`.

Scans a dataset (or the shard `data.shard` of `data.num_shards`) for the top-k images of every
feature map and writes `topk.pt`, `result.json` and `config.yaml` into the job's own folder. The
running top-k is checkpointed every `checkpoint_every` images: run a killed job again with the same
config into the same folder (`hydra.run.dir=<job>`) and it continues; a finished one is not redone.

    python -m experiments.scan data=folder data.root=/data/imagenet/val model.weights=imagenet
    python -m experiments.scan -m data.shard=0,1,2,3 data.num_shards=4 hydra/launcher=joblib
    python -m experiments.merge_scans "inputs=[multirun/<date>/<time>]"

All the work is `deconvnet.jobs.scan.run_scan`; a bad value ends the run with one line
`error: <key>: ...` and exit status 1, before the model is loaded.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="scan")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `scan` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("scan", cfg)


if __name__ == "__main__":
    main()
