"""An i-PI Python-driver PES that serves a UMA model through umadrive's ASE
``UMACalculator``: the baseline ``benchmarks/driver_pimd.py`` compares with.

    i-pi-py_driver -m custom -P benchmarks/uma_ase_pes.py -u -a NAME \\
        -o template=start.extxyz,model=tests/data/uma_s1p1.pt,task=omat
"""

import torch
from ipi.pes._ase import ASEDriver

from umadrive.model.calculator import UMACalculator
from umadrive.model.predictor import get_predict_unit

__DRIVER_NAME__ = "uma_ase"
__DRIVER_CLASS__ = "UMAASEDriver"


class UMAASEDriver(ASEDriver):
    """ASEDriver whose calculator is ``UMACalculator(get_predict_unit(model))``."""

    def __init__(self, template, model, task="omat", threads="1", *args, **kwargs):
        self.model = model
        self.task = task
        torch.set_num_threads(int(threads))  # this process is a benchmark's own
        super().__init__(template, *args, **kwargs)

    def check_parameters(self):
        super().check_parameters()
        self.ase_calculator = UMACalculator(get_predict_unit(self.model), task_name=self.task)
