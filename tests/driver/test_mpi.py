"""MPI: i-PI 3.3's ``<ffmpi>`` served by ``umadrive serve --mpi`` ranks, and plain
fan-out (``mpiexec -n K umadrive serve``), both launched with the real
``mpiexec`` of the mpich wheel; fault injection with a fake i-PI rank 0; the
per-rank device choice; which transport flags go together."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest

from tests.driver.conftest import PEER_TIMEOUT_S
from tests.driver.pimd import (
    NBEADS, STEPS, assert_every_bead_matches_emt, pimd_input, requests_served,
)
from tests.peers import Peers, console_script
from tests.reference import cu3au_32
from umadrive.driver.ranks import Rank, launcher_rank, rank_device
from umadrive.commands.serve import configure, parse_address, serve_options

# the mpich wheel's launcher, next to the python whose mpi4py uses that MPICH
MPIEXEC = Path(sys.executable).with_name("mpiexec")
IPI = console_script("i-pi")
SERVE = [sys.executable, "-m", "umadrive", "serve", "--model", "ase:emt",
         "--structure", "alloy.extxyz"]
ABORTED = ("umadrive serve[rank 1]: ERROR: aborting the MPI job, i-PI included: i-PI would "
           "wait forever for this rank's answer")


class MpiJobs(Peers):
    """Starts ``mpiexec`` jobs in their own process group (its ranks are its
    grandchildren) with output in ``<name>.log``; ends the whole group."""

    own_session = True

    def __init__(self, folder: Path, env: dict) -> None:
        # Hydra ends a stuck job itself
        super().__init__(folder, timeout_s=PEER_TIMEOUT_S,
                         env={**env, "MPIEXEC_TIMEOUT": str(PEER_TIMEOUT_S)})

    def start(self, name: str, argv: list[str], **options) -> subprocess.Popen:
        """Starts ``mpiexec ARGV``."""
        assert MPIEXEC.exists(), f"{MPIEXEC} is missing: pip install mpich (the [test] extra)"
        return super().start(name, [str(MPIEXEC), *argv], **options)


@pytest.fixture
def mpi_jobs(tmp_path, test_env):
    jobs = MpiJobs(tmp_path, test_env)
    yield jobs
    jobs.stop_all()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_pimd_over_ffmpi_with_two_driver_ranks(tmp_path, mpi_jobs, batch_size):
    xml = pimd_input(tmp_path, transport="mpi", batch_size=batch_size)
    (tmp_path / "input.xml").write_text(xml)
    # i-PI 3.3.1 leaves with os._exit(0) right after MPI_Finalize; Hydra then at
    # times takes it for a crash and kills the drivers still finalizing (exit
    # status 9 after a complete run: tools/ipi_ffmpi_hard_exit_repro.py).
    job = mpi_jobs.start("job", ["-disable-auto-cleanup", "-n", "1", IPI, "input.xml", ":",
                                 "-n", "2", *SERVE, "--mpi"])
    log_path = tmp_path / "job.log"
    assert mpi_jobs.wait(job) == 0, log_path.read_text()[-3000:]
    log = log_path.read_text()
    for rank in (1, 2):
        prefix = f"umadrive serve[rank {rank}]: INFO:"
        assert f"{prefix} connected to i-PI <ffmpi> at MPI rank 0 as MPI rank {rank}" in log
        assert f"{prefix} the server sent EXIT after" in log
    served = requests_served(log)
    assert sorted(served) == ["umadrive serve[rank 1]", "umadrive serve[rank 2]"]
    if batch_size == 1:  # with batches, how many beads one WORK carries depends on timing
        assert sum(served.values()) == NBEADS * (STEPS + 1)
        assert min(served.values()) > 0, served
    assert_every_bead_matches_emt(tmp_path)


@pytest.mark.timeout(180)
def test_mpiexec_fans_out_independent_drivers_that_name_their_device(
        processes, tmp_path, socket_name, mpi_jobs):
    ipi = processes.ipi(pimd_input(tmp_path, unix=socket_name))
    job = mpi_jobs.start("serve", ["-n", "2", *SERVE, "--unix", socket_name])
    assert processes.wait(ipi) == 0, processes.logs()
    log_path = tmp_path / "serve.log"
    assert mpi_jobs.wait(job) == 0, log_path.read_text()[-3000:]
    log = log_path.read_text()
    for rank in (0, 1):
        assert (f"umadrive serve[rank {rank}]: INFO: took device cpu "
                f"(rank {rank} of 2, local rank {rank})") in log
    served = requests_served(log)
    assert sorted(served) == ["umadrive serve[rank 0]", "umadrive serve[rank 1]"]
    assert sum(served.values()) == NBEADS * (STEPS + 1)
    assert min(served.values()) > 0, served
    assert_every_bead_matches_emt(tmp_path)


@pytest.mark.timeout(180)
def test_ranks_that_refuse_the_system_abort_the_job_instead_of_leaving_ipi_waiting(
        tmp_path, mpi_jobs):
    (tmp_path / "input.xml").write_text(pimd_input(tmp_path, transport="mpi"))
    ase.io.write(tmp_path / "small.extxyz", cu3au_32()[:4])
    job = mpi_jobs.start("job", ["-disable-auto-cleanup", "-n", "1", IPI, "input.xml", ":",
                                 "-n", "2", sys.executable, "-m", "umadrive", "serve",
                                 "--model", "ase:emt", "--structure", "small.extxyz", "--mpi"])
    status = mpi_jobs.wait(job)  # without the abort, i-PI would wait for the answers forever
    log = (tmp_path / "job.log").read_text()
    assert status != 0, log
    for rank in (1, 2):
        assert (f"umadrive serve[rank {rank}]: ERROR: the request has 32 atoms, the template "
                "structure has 4") in log, log
        assert ABORTED.replace("[rank 1]", f"[rank {rank}]") in log, log
    # issue 11: an aborted job left MPICH's 2 MB /dev/shm/mpich_shm_* behind
    removed = re.findall(r"removed (/dev/shm/mpich_shm_\S+) \(MPICH's shared memory", log)
    assert removed, log
    assert not any(Path(path).exists() for path in removed)


# ---------------------------------------------------------------- fault injection


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nat, count, body_length, message", [
    (10**8, 1, -1, "i-PI <ffmpi> at MPI rank 0: expected WORK with at most 1000 atoms per "
                   "structure (raise --max-atoms if the system really is that large), received "
                   "nat=100000000"),
    (32, 1, 100, "i-PI <ffmpi> at MPI rank 0: expected WORK for 1 structure(s) of 32 atoms of "
                 "114 items, received 100 items"),
    (4, 2, -1, "i-PI <ffmpi> at MPI rank 0: expected WORK for 1 to 1 structures (batch_size 1 "
               "in INIT), received 2"),
    (4, 1, 18 + 3 * 4, "the request has 4 atoms, the template structure has 32: give "
                       "--structure the same system (atoms in the same order) the engine "
                       "simulates; not answering i-PI <ffmpi> at MPI rank 0"),
], ids=["too many atoms", "short body", "batch over INIT", "refused structure"])
def test_bad_work_is_refused_and_the_job_aborted_so_ipi_does_not_wait_forever(
        tmp_path, mpi_jobs, nat, count, body_length, message):
    """The fake i-PI waits for RESULT like i-PI does; the job ends only because the
    driver aborts it (Hydra's clean-up of a failed rank is switched off)."""
    fake = str(Path(__file__).with_name("fake_ffmpi.py"))
    ase.io.write(tmp_path / "alloy.extxyz", cu3au_32())
    job = mpi_jobs.start("job", ["-disable-auto-cleanup", "-n", "1", sys.executable, fake,
                                 str(nat), str(count), str(body_length), ":", "-n", "1", *SERVE,
                                 "--mpi", "--max-atoms", "1000"])
    status = mpi_jobs.wait(job)
    log = (tmp_path / "job.log").read_text()
    assert f"umadrive serve[rank 1]: ERROR: {message}" in log, log
    assert ABORTED in log, log
    assert status != 0, log


def test_mpi_outside_an_mpmd_job_is_refused(tmp_path, processes):
    ase.io.write(tmp_path / "alloy.extxyz", cu3au_32())
    serve = processes.serve("--mpi", "--model", "ase:emt", "--structure", "alloy.extxyz")
    assert processes.wait(serve) == 1
    assert "driver rank > 0 of an MPMD job" in (tmp_path / "serve.log").read_text()


# ---------------------------------------------------------------- device per rank


@pytest.mark.parametrize("environ, expected", [
    ({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1"}, Rank(3, 4, 1)),
    ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8",
      "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, Rank(5, 8, 1)),
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "3", "SLURM_LOCALID": "0"}, Rank(2, 3, 0)),
    ({"PMI_RANK": "0", "PMI_SIZE": "1"}, None),  # a job of one is not fan-out
    ({"SLURM_PROCID": "2"}, None),
    ({}, None),
])
def test_launcher_rank_from_the_environment(environ, expected):
    assert launcher_rank(environ) == expected


@pytest.mark.parametrize("requested, local, devices, expected", [
    ("cuda", 0, 2, "cuda:0"),
    ("cuda", 3, 2, "cuda:1"),
    ("cuda", 5, 4, "cuda:1"),
    ("cuda", None, 4, "cuda:0"),
    ("cuda:3", 1, 4, "cuda:3"),
    ("cpu", 3, 0, "cpu"),
])
def test_each_rank_takes_cuda_local_rank_modulo_devices(requested, local, devices, expected):
    rank = None if local is None else Rank(rank=10 + local, size=16, local=local)
    assert rank_device(requested, rank, devices) == expected


@pytest.mark.parametrize("requested, devices, message", [
    ("gpu", 1, "--device 'gpu': Expected one of cpu, cuda"),
    ("cuda:x", 1, "--device 'cuda:x': Invalid device string"),
    ("cuda", 0, "--device 'cuda': torch .* sees no CUDA device; use --device cpu"),
])
def test_device_the_ranks_cannot_map_is_left_for_the_loader_to_refuse(requested, devices,
                                                                      message):
    assert rank_device(requested, Rank(0, 2, 0), devices) == requested
    torch = pytest.importorskip("torch")
    if devices == 0 and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    from umadrive.driver.backends.uma import torch_device

    with pytest.raises(ValueError, match=message):
        torch_device(requested)


# ---------------------------------------------------------------- flags


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(["--model", "m", "--structure", "s", *argv])


def _problem(*argv: str) -> str | None:
    args = _parse(*argv)
    try:
        serve_options(args).check_address(parse_address(args))
    except ValueError as error:
        return str(error)
    return None


@pytest.mark.parametrize("argv, message", [
    (["--mpi", "--connections", "2"], "transport='mpi' with connections=2 (--mpi --connections): "
                                      "i-PI's <ffmpi> gives each driver rank one slot; start more "
                                      "ranks instead"),
    (["--mpi", "--persist"], "(--mpi --persist): a driver rank lives and ends with i-PI's MPI job"),
    (["--mpi", "--unix", "x"], "transport='mpi' (--mpi) talks to i-PI over MPI: give no address"),
    (["--shm", "--port", "31415"], "transport='shm' (--shm) needs the unix socket of i-PI's "
                                   "<ffsocket mode='shm'>"),
    (["--mpi-name", "a", "--unix", "x"], "mpi_name='a' (--mpi-name) only applies with "
                                         "transport='mpi'"),
    ([], "no address: give --unix NAME, or --port P [--host H] (or --mpi"),
    (["--host", "h"], "--host 'h' needs --port P"),
])
def test_transport_flags_that_do_not_fit_are_named(argv, message):
    assert message in (_problem(*argv) or "")


def test_mpi_and_shm_together_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse("--mpi", "--shm")
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--mpi"], ["--mpi", "--mpi-name", "a"], ["--shm", "--unix", "x", "--connections", "4"],
    ["--unix", "x"], ["--port", "31415", "--host", "h"],
])
def test_transport_flags_that_fit_pass(argv):
    assert _problem(*argv) is None


def test_mpi_with_connections_exits_2_before_loading_anything(processes, tmp_path):
    serve = processes.serve("--mpi", "--connections", "2", "--model", "no-such-model.pt",
                            "--structure", "no-such-file.extxyz")
    assert processes.wait(serve) == 2
    assert "ERROR: transport='mpi' with connections=2" in (tmp_path / "serve.log").read_text()
