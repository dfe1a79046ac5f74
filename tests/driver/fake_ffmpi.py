"""A fake i-PI rank 0 of an ``<ffmpi>`` job, for fault injection: splits
COMM_WORLD as i-PI does, takes one driver's HELLO, sends INIT (no batch) and one
WORK with the header ``[nat, count]`` given on the command line, followed by a
body of ``body_length`` float64 (none when negative), then waits for the RESULT
as i-PI does: forever, unless the driver aborts the job.

    mpiexec -n 1 python fake_ffmpi.py NAT COUNT BODY_LENGTH : -n 1 umadrive serve --mpi ...
"""

import sys

import numpy as np
from mpi4py import MPI

TAG_HELLO, TAG_INIT, TAG_WORK, TAG_RESULT = 1, 2, 3, 4

nat, count, body_length = (int(value) for value in sys.argv[1:4])
world = MPI.COMM_WORLD
world.Split(color=0, key=0)
status = MPI.Status()
for _ in range(2):  # the group [root, size, members] and the forcefield name
    world.Probe(source=1, tag=TAG_HELLO, status=status)
    hello = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
    world.Recv([hello, MPI.BYTE], source=1, tag=TAG_HELLO)
parameters = np.frombuffer(b" ", dtype=np.uint8)
world.Send([np.array([0, parameters.size], dtype=np.int32), MPI.INT], dest=1, tag=TAG_INIT)
world.Send([parameters, MPI.BYTE], dest=1, tag=TAG_INIT)
world.Send([np.array([nat, count], dtype=np.int32), MPI.INT], dest=1, tag=TAG_WORK)
if body_length >= 0:
    world.Send([np.zeros(body_length), MPI.DOUBLE], dest=1, tag=TAG_WORK)
world.Probe(source=1, tag=TAG_RESULT)
sys.exit("fake i-PI: a RESULT arrived for a WORK the driver should have refused")
