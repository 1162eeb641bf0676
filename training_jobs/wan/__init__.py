"""Wan2.1 text-to-video fine-tuning and generation, built on diffusers' Wan components and transformers' UMT5 encoder.

No Django here: these modules run on GPU nodes (``python -m training_jobs.train``, ``training_jobs.generate``).

* :mod:`training_jobs.wan.config` - the job configuration with the paper's defaults and :func:`validate` (plain
  Python, no torch import: the job form uses it).
* :mod:`training_jobs.wan.tiny` - :func:`build_tiny_wan`, a tiny randomly initialised Wan2.1 weights directory in the
  diffusers layout, for tests and development (loads through the same code as the real Wan2.1-T2V-1.3B weights).
* :mod:`training_jobs.wan.weights` - checks and loading of a local weights directory (never a hub download).
"""
