"""Merge a sharded scan: `python -m experiments.merge_scans "inputs=[multirun/<date>/<time>]"`.

Checks that the inputs are the finished shards of one scan (each once, none missing) and writes,
into the job's own folder, `topk.pt` equal to one scan over the whole dataset and `result.json`;
`python -m experiments.fig2 scan=<this job's folder>` draws Fig. 2 from it without scanning again.
The work is `deconvnet.jobs.scan.merge_scan_jobs`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="merge_scans")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `merge_scans` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("merge_scans", cfg)


if __name__ == "__main__":
    main()
