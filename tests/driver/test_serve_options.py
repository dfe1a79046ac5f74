"""``umadrive serve`` against this package's ForceServer (a real server-side
peer, in the test process): warm-up, status lines and JSON log, a failing model
(the driver embedded in a thread), a stop signal while waiting for a server, bad
flags; and the UMA backend's options."""

from __future__ import annotations

import json
import signal
import time

import ase.io
import numpy as np
import pytest

from tests.driver.threads import ServeThread
from tests.reference import emt, sheared_copper, to_structure
from umadrive.cli import main
from umadrive.driver import ServeOptions, ServeOptionsError, make_backend
from umadrive.protocol import ForceServer, ProtocolError
from umadrive.protocol.addresses import DEFAULT_PREFIX, Address
from umadrive.testing import check_batch_equals_single

TIMEOUT_S = 60


@pytest.mark.timeout(120)
def test_warmup_status_lines_and_json_log(processes, tmp_path, socket_name):
    atoms = sheared_copper()
    ase.io.write(tmp_path / "cu.extxyz", atoms)
    with ForceServer(unix=socket_name, timeout=TIMEOUT_S) as server:
        serve = processes.serve("--model", "ase:emt", "--structure", str(tmp_path / "cu.extxyz"),
                                "--unix", socket_name, "--warmup", "--log-every", "2",
                                "--log-json", str(tmp_path / "log.jsonl"))
        server.accept(timeout=TIMEOUT_S)
        for step in range(5):
            moved = atoms.copy()
            moved.positions += 0.01 * step
            (got,) = server.compute([to_structure(moved)])
            assert abs(got.energy - emt(moved).energy) <= 1e-9
    assert processes.wait(serve) == 0, processes.logs()
    log = (tmp_path / "serve.log").read_text()
    assert "warm-up prediction on the template (32 atoms)" in log
    assert "steps 1-2: 2 requests, 2 structures (1 per step), 64 atoms; ms/step wait" in log
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events == ["loaded", "warmup", "connected", "status", "status", "run_end", "summary"]
    summary = records[-1]
    assert (summary["steps"], summary["requests"], summary["atoms"]) == (5, 5, 5 * 32)
    for key in ("ms_wait", "ms_receive", "ms_model", "ms_send", "atoms_per_s"):
        assert summary[key] > 0, key
    assert "device_memory_mib" not in summary  # CPU


@pytest.mark.timeout(120)
def test_model_failure_is_logged_with_the_size_and_nothing_is_sent(socket_name, caplog):
    atoms = sheared_copper()
    backend = make_backend("ase:tests.driver.failing_calculator:OutOfMemoryCalculator", atoms)
    with ForceServer(unix=socket_name, timeout=TIMEOUT_S) as server:
        driver = ServeThread(backend, atoms, Address(path=DEFAULT_PREFIX + socket_name))
        server.accept(timeout=TIMEOUT_S)
        with pytest.raises(ProtocolError, match="FORCEREADY, received end of stream"):
            server.compute([to_structure(atoms)])
    assert driver.join(TIMEOUT_S) == 1
    assert ("the model failed on 1 structures of [32] atoms (32 in all): MemoryError: pretend "
            "the device ran out of memory") in caplog.text


@pytest.mark.timeout(60)
def test_stop_signal_while_waiting_for_a_server_exits_0(processes, tmp_path, socket_name):
    ase.io.write(tmp_path / "cu.extxyz", sheared_copper())
    serve = processes.serve("--model", "ase:emt", "--structure", str(tmp_path / "cu.extxyz"),
                            "--unix", socket_name, "--persist")
    deadline = time.monotonic() + TIMEOUT_S
    while "waiting for a server" not in (tmp_path / "serve.log").read_text():
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.05)
    serve.send_signal(signal.SIGTERM)
    assert processes.wait(serve) == 0, processes.logs()


@pytest.mark.parametrize("argv, message", [
    (["--connections", "0"], "connections=0 (--connections): expected 1 or more"),
    (["--batch-window", "-1"], "batch_window_ms=-1.0 (--batch-window): expected 0 ms or more"),
    (["--log-every", "-5"], "log_every=-5 (--log-every): expected 0"),
    (["--model-kwargs", "[1]"], "--model-kwargs '[1]' must be a JSON object"),
    (["--stop-grace", "-1"], "stop_grace_s=-1.0 (--stop-grace): expected 0 s or more"),
    (["--stop-grace", "nan"], "stop_grace_s=nan (--stop-grace): expected 0 s or more"),
])
def test_bad_serve_options_exit_2_before_loading(caplog, argv, message):
    status = main(["serve", "--model", "no-such-model.pt", "--structure", "no-such-file.extxyz",
                   "--unix", "x", *argv])
    assert status == 2
    assert message in caplog.text
    assert "loading" not in caplog.text


# ---------------------------------------------------------------- UMA backend


@pytest.fixture(scope="module")
def uma():
    pytest.importorskip("torch")
    from umadrive.driver.backends import uma as uma_backend

    return uma_backend


def test_uma_backend_batch_equals_one_by_one_calls(uma, tmp_path):
    from tests.reference import UMA_S1P1, cu3au_8
    from umadrive.driver.backends import UmaOptions, make_backend

    mode = tmp_path / "float64.json"
    mode.write_text(json.dumps({"base_precision_dtype": "float64"}))
    atoms = cu3au_8()
    backend = make_backend(str(UMA_S1P1), atoms, uma=UmaOptions(task="omat", mode=str(mode)))
    rng = np.random.default_rng(5)
    structures = [to_structure(atoms)]
    for _ in range(3):
        moved = atoms.copy()
        moved.positions += rng.normal(0, 0.05, moved.positions.shape)
        structures.append(to_structure(moved))
    check_batch_equals_single(backend.compute, structures, dtype="float64")
    assert len({round(p.energy, 8) for p in backend.compute(structures)}) == len(structures)


@pytest.mark.parametrize("options, message", [
    ({}, r"--task is required: .* predicts for \['oc20', 'odac', 'omat', 'omc', 'omol'\]"),
    ({"task": "nope"}, "task 'nope' is not one of this model's tasks"),
    ({"task": "omat", "mode": "fast"}, "--mode 'fast': expected default or turbo, or the path"),
    ({"task": "omat", "device": "tpu"}, "--device 'tpu'"),
])
def test_uma_backend_options_are_checked(uma, options, message):
    from tests.reference import UMA_S1P1, cu3au_8
    from umadrive.driver.backends import UmaOptions, make_backend

    with pytest.raises(ValueError, match=message):
        make_backend(str(UMA_S1P1), cu3au_8(), uma=UmaOptions(**options))


@pytest.mark.parametrize("text, message", [
    ('{"compile": true, "speed": 3}', r"unknown settings \['speed'\]"),
    ('{"base_precision_dtype": "float16"}', "base_precision_dtype 'float16'"),
    ("[1]", "expected an object of inference settings, got list"),
    ("{", "not JSON"),
])
def test_settings_file_errors_name_the_problem(uma, tmp_path, text, message):
    path = tmp_path / "settings.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        uma.inference_settings(str(path))


def test_settings_file_fields_override_the_default_preset(uma, tmp_path):
    import torch

    path = tmp_path / "settings.json"
    path.write_text('{"activation_checkpointing": false, "base_precision_dtype": "float64"}')
    settings = uma.inference_settings(str(path))
    assert settings.activation_checkpointing is False
    assert settings.base_precision_dtype == torch.float64
    assert settings.internal_graph_gen_version == 2 and settings.merge_mole is False


@pytest.mark.parametrize("flag", ["TT", "TTX", "1 1 1"])
def test_a_bad_pbc_flag_is_refused_by_the_parser(capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--model", "ase:emt", "--structure", "x.extxyz", "--unix", "x",
              "--pbc", flag])
    assert exit_info.value.code == 2
    assert "expected three letters T or F, one per lattice direction" in capsys.readouterr().err


@pytest.mark.parametrize("pbc", [(True, True), (1, 1, 1), "TTT"])
def test_serve_options_pbc_must_be_three_booleans(pbc):
    with pytest.raises(ServeOptionsError, match=r"\(--pbc\): expected three booleans"):
        ServeOptions(pbc=pbc)


@pytest.mark.parametrize("text, expected", [("8GiB", 8 * 2**30), ("512MiB", 512 * 2**20),
                                            ("2e9", 2 * 10**9), ("1.5 GB", 15 * 10**8)])
def test_memory_budget_sizes(text, expected):
    from umadrive.commands.serve import memory_size

    assert memory_size(text) == expected


@pytest.mark.parametrize("text, message", [("8 gigs", "expected a size such as 8GiB"),
                                           ("-1GiB", "expected a size such as 8GiB"),
                                           ("1000", "below 1 MiB")])
def test_a_bad_memory_budget_is_refused_by_the_parser(capsys, text, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--model", "ase:emt", "--structure", "x.extxyz", "--unix", "x",
              f"--memory-budget={text}"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["ase:emt", "fairchem:uma-s-1p1"])
def test_a_memory_budget_for_another_backend_is_refused(spec):
    from tests.reference import cu3au_8
    from umadrive.driver.backends import UmaOptions, make_backend

    with pytest.raises(ValueError, match="--memory-budget applies to umadrive's own UMA backend"):
        make_backend(spec, cu3au_8(), uma=UmaOptions(memory_budget=2**30))


def test_a_memory_budget_without_checkpointing_names_the_mode(uma):
    from tests.reference import UMA_S1P1, cu3au_8
    from umadrive.driver.backends import UmaOptions, make_backend

    with pytest.raises(ValueError, match="--mode 'turbo' with --memory-budget: .*"
                                         "activation_checkpointing=False"):
        make_backend(str(UMA_S1P1), cu3au_8(),
                     uma=UmaOptions(task="omat", mode="turbo", memory_budget=2**30))
