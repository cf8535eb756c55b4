"""The deconvnet itself and what every other layer builds on: the paper's stages of a model
(`architecture`), receptive fields (`geometry`, `windows`), the mirror network with its exact
adjoints (`mirror`), what is kept before projecting (`seeds`), `reconstruct`, forward probes and
targets (`probe`, `targets`), display scaling (`display`), precision on CUDA (`precision`) and
each small input check once (`validation`).

The lowest layer: it imports nothing else of the package (docs/mirror.md, docs/stages.md).
"""
