"""Zeiler & Fergus's other experiments and the sanity checks of the field (docs/methods.md):
occlusion sensitivity (Fig. 7), invariance (Fig. 5), correspondence (Table 1), and Adebayo et
al.'s (2018) randomisation tests. Plain functions; `deconvnet.jobs` writes their job
folders for `python -m experiments.<name>`.
"""
