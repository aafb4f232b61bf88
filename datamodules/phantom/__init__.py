"""Embedded default data: a procedural abdominal CT/MRI phantom with liver labels.

Two layers: anatomy (a tissue label map built in millimetres, `anatomy.py`) and appearance
(CT HU, MRI T1/T2, or domain-randomised, `appearance.py`). See docs/phantom.md.
"""
from .command import main
from .writer import (GENERATOR_VERSION, PhantomCase, case_seed, generate_case, phantom_cache_dir,
                     write_phantom_dataset)

__all__ = ["GENERATOR_VERSION", "PhantomCase", "case_seed", "generate_case", "main", "phantom_cache_dir",
           "write_phantom_dataset"]
