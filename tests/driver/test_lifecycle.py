"""The driver's life next to a real i-PI: (g) SIGTERM/SIGINT mid-request finish
and send the answer, then exit 0 while i-PI goes on with another driver; (h) i-PI
killed mid-run: the driver exits 1 at once with a clear message, without
spinning; (f) one ``--persist`` process serves two i-PI runs in a row with the
model loaded once; ``--extras`` reach i-PI's output."""

from __future__ import annotations

import ast
import json
import os
import signal
import sys
import time

import ase.io
import numpy as np
import pytest

from tests.peers import console_script
from tests.reference import sheared_copper
from umadrive.ipi_input import IpiRun, ipi_input_xml

BOUND_S = 60  # every wait on a peer in this file


def wait_for_lines(path, count: int, processes) -> None:
    """Waits (bounded) until ``path`` has ``count`` lines."""
    deadline = time.monotonic() + BOUND_S
    while not (path.exists() and len(path.read_text().splitlines()) >= count):
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not reach {count} lines:\n{processes.logs()}")
        time.sleep(0.05)


def wait_for_text(path, text: str, processes) -> None:
    """Waits (bounded) until ``path`` contains ``text``."""
    deadline = time.monotonic() + BOUND_S
    while not (path.exists() and text in path.read_text()):
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} never said {text!r}:\n{processes.logs()}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_with_cpu_time(process) -> tuple[int, float]:
    """Reaps ``process`` (bounded wait) and returns its exit status and the CPU
    seconds (user + system) it used in all."""
    deadline = time.monotonic() + BOUND_S
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            pytest.fail(f"the driver did not exit within {BOUND_S} s")
        time.sleep(0.01)


def start_run(processes, tmp_path, socket_name, steps: int, **options):
    structure = tmp_path / "start.extxyz"
    ase.io.write(structure, sheared_copper())
    run = IpiRun(structure=structure.name, unix=socket_name, ensemble="nve", steps=steps,
                 properties=("step", "potential"), **options)
    return structure, processes.ipi(ipi_input_xml(run))


def slow_model(tmp_path, delay: float) -> list[str]:
    kwargs = {"marker": str(tmp_path / "computing"), "delay": delay}
    return ["--model", "ase:tests.driver.slow_calculator:SlowEMT",
            "--model-kwargs", json.dumps(kwargs)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_request_answers_it_and_ipi_continues_with_another_driver(
        processes, tmp_path, socket_name, test_env, sig):
    steps = 6
    structure, ipi = start_run(processes, tmp_path, socket_name, steps)
    where = ["--structure", str(structure), "--unix", socket_name]
    first = processes.serve(*slow_model(tmp_path, delay=1.0), *where, env=test_env)
    wait_for_lines(tmp_path / "computing", 2, processes)  # inside the second request
    first.send_signal(sig)
    assert processes.wait(first) == 0, processes.logs()
    log = (tmp_path / "serve.log").read_text()
    assert f"{sig.name} received: finishing the request in flight" in log
    assert f"stopped by {sig.name} after 2 requests" in log  # the one in flight was answered
    second = processes.start("serve2", [sys.executable, "-m", "umadrive", "serve",
                                        "--model", "ase:emt", *where])
    assert processes.wait(second) == 0, processes.logs()
    assert processes.wait(ipi) == 0, processes.logs()
    assert len(np.loadtxt(tmp_path / "sim.out", ndmin=2)) == steps + 1


@pytest.mark.timeout(180)
@pytest.mark.parametrize("moment", ["computing", "idle"])
def test_ipi_killed_mid_run_ends_the_driver_at_once_without_spinning(
        processes, tmp_path, socket_name, test_env, moment):
    structure, ipi = start_run(processes, tmp_path, socket_name, steps=1000)
    delay = 1.0 if moment == "computing" else 0.0
    serve = processes.serve(*slow_model(tmp_path, delay), "--structure", str(structure),
                            "--unix", socket_name, env=test_env)
    wait_for_lines(tmp_path / "computing", 3, processes)
    if moment == "idle":  # a step i-PI has not yet sent: the driver waits in select()
        os.kill(ipi.pid, signal.SIGSTOP)
        time.sleep(0.5)
    cpu_before = cpu_seconds(serve.pid)
    killed = time.monotonic()
    ipi.kill()
    ipi.wait(BOUND_S)
    status, cpu_total = wait_with_cpu_time(serve)
    elapsed = time.monotonic() - killed
    log = (tmp_path / "serve.log").read_text()
    assert status == 1, log
    assert "ERROR" in log and "server unix:" in log, log
    if moment == "idle":
        assert "closed the connection without EXIT" in log
    else:
        assert "Broken pipe" in log or "end of stream" in log, log
    # prompt and quiet: no retry loop, no busy loop (the driver's own CPU time
    # after the kill is a small part of the wall time it took to exit)
    assert elapsed < delay + 10, elapsed
    assert cpu_total - cpu_before < 0.5 * elapsed + 0.5, (cpu_total - cpu_before, elapsed)


@pytest.mark.timeout(240)
def test_persist_serves_runs_in_a_row_with_one_load_and_refuses_another_system(
        processes, tmp_path, socket_name, test_env):
    """One ``--persist`` driver with the UMA fixture serves two i-PI runs (the
    model is loaded once), then refuses a run of another atom count with a clear
    message and keeps waiting; SIGTERM ends it with status 0."""
    pytest.importorskip("torch")
    from tests.peers import one_thread_env
    from tests.reference import UMA_S1P1, cu3au_8

    template = tmp_path / "alloy.extxyz"
    ase.io.write(template, cu3au_8())
    serve = processes.serve("--model", str(UMA_S1P1), "--task", "omat", "--structure",
                            str(template), "--unix", socket_name, "--persist",
                            "--log-json", str(tmp_path / "serve.jsonl"), env=one_thread_env())
    steps = 2
    for run_index in range(2):
        folder = tmp_path / f"run{run_index}"
        folder.mkdir()
        ase.io.write(folder / "start.extxyz", cu3au_8())
        run = IpiRun(structure="start.extxyz", unix=socket_name, ensemble="nve", steps=steps,
                     properties=("step", "potential"))
        (folder / "input.xml").write_text(ipi_input_xml(run))
        ipi = processes.start(f"ipi{run_index}", [console_script("i-pi"), "input.xml"],
                              cwd=folder)
        assert processes.wait(ipi) == 0, processes.logs()
        assert len(np.loadtxt(folder / "sim.out", ndmin=2)) == steps + 1
    other = tmp_path / "other"
    other.mkdir()
    ase.io.write(other / "start.extxyz", cu3au_8().repeat((2, 1, 1)))
    (other / "input.xml").write_text(ipi_input_xml(IpiRun(
        structure="start.extxyz", unix=socket_name, ensemble="nve", steps=steps)))
    processes.start("ipi_other", [console_script("i-pi"), "input.xml"], cwd=other)
    wait_for_text(tmp_path / "serve.log", "nat=8 atoms, the template's count (give --structure "
                  "the system the engine simulates, atoms in the same order), received nat=16",
                  processes)
    assert serve.poll() is None  # refused, and waiting for the next run
    serve.send_signal(signal.SIGTERM)
    assert processes.wait(serve) == 0, processes.logs()
    records = [json.loads(line) for line in (tmp_path / "serve.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records].count("loaded") == 1
    # A reconnect can reach the finished i-PI's listening socket just before it
    # closes: that connection ends at once with EOF and no request, and is no run.
    ends = [r for r in records if r["event"] == "run_end"
            and not (r["outcome"] == "EOF" and r["requests"] == 0)]
    assert [r["outcome"] for r in ends[:2]] == ["EXIT", "EXIT"]
    assert [r["requests"] for r in ends[:2]] == [steps + 1, steps + 1]
    assert ends[2]["outcome"] == "failed" and ends[2]["requests"] == 0  # the refused run
    assert records[-1]["event"] == "summary"


@pytest.mark.timeout(120)
def test_extras_are_recorded_by_ipi(processes, tmp_path, socket_name):
    structure = tmp_path / "start.extxyz"
    ase.io.write(structure, sheared_copper())
    ipi = processes.ipi(ipi_input_xml(IpiRun(structure=structure.name, unix=socket_name,
                                             ensemble="nve", steps=2, extras=True)))
    serve = processes.serve("--model", "ase:emt", "--structure", str(structure), "--unix",
                            socket_name, "--extras")
    assert processes.wait(ipi) == 0, processes.logs()
    assert processes.wait(serve) == 0, processes.logs()
    text = (tmp_path / "sim.extras_0").read_text()
    # i-PI prints the parsed object with the JSON text it received under "raw"
    records = [json.loads(ast.literal_eval(line)["raw"][0]) for line in text.splitlines()
               if line.startswith("{")]
    assert [r["step"] for r in records] == [1, 2, 3], text
    assert all(r["model"] == "ase:emt" and r["structures_in_step"] == 1 and r["model_ms"] > 0
               for r in records)
