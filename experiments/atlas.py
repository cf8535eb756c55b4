"""An atlas of every unit: `python -m experiments.atlas [key=value ...]`.

A static site of what each channel of a model responds to, over a dataset: index.html (model,
weights, dataset, stages), one page per stage (every channel by its strongest projection and its
optimised image; also sorted by how often it fires) and one page per channel (its top-9 image
patches with their deconvnet and guided projections, its optimised images, a histogram of its
per-image maximum, links). Open `<job folder>/index.html` in a browser (file:// works).

    python -m experiments.atlas model=vgg16 model.weights=hed data=samples
    python -m experiments.atlas model=efficientnet_lite0 model.weights=imagenet channels=16
    python -m experiments.atlas scan=outputs/<date>/<time>       # a saved or merged scan: no second scan
    python -m experiments.atlas stages=[3] "channels=[0,5,9]" optimize.steps=0
    python -m experiments.atlas hydra.run.dir=<atlas folder>     # the same config again: resumes

All the work is `deconvnet.jobs.atlas.run_atlas`; this module only maps the config onto its arguments.
A bad value ends the run with one line `error: <key>: ...` and exit status 1, before any work.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.common import run_registered


@hydra.main(version_base="1.3", config_path="../conf", config_name="atlas")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: the job `atlas` (`deconvnet.jobs.registry.JOBS`) into this job's folder."""
    run_registered("atlas", cfg)


if __name__ == "__main__":
    main()
