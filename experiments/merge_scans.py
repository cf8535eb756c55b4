"""Merge a sharded scan: `python -m experiments.merge_scans "inputs=[multirun/<date>/<time>]"`.

Checks that the inputs are the finished shards of one scan (each once, none missing) and writes,
into the job's own folder, `topk.pt` equal to one scan over the whole dataset and `result.json`;
`python -m experiments.fig2 scan=<this job's folder>` draws Fig. 2 from it without scanning again.
The work is `deconvnet.jobs.scan.merge_scan_jobs`.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from deconvnet.jobs.files import provenance
from deconvnet.jobs.scan import merge_scan_jobs
from experiments.common import hydra_output_dir, user_errors

log = logging.getLogger("experiments.merge_scans")


@hydra.main(version_base="1.3", config_path="../conf", config_name="merge_scans")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: merge `inputs` into the job's folder."""
    with user_errors(log):
        if OmegaConf.is_missing(cfg, "inputs"):
            raise ValueError(
                "inputs: required: the sweep folder of a sharded scan, or its shards' "
                'job folders, e.g. "inputs=[multirun/<date>/<time>]"'
            )
        config = OmegaConf.to_container(cfg, resolve=True)
        inputs = config["inputs"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        out = hydra_output_dir()
        merge_scan_jobs(inputs, out, config=config, provenance=provenance())


if __name__ == "__main__":
    main()
