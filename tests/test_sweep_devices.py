"""``workbench sweep --devices``: each worker gets its own device, bad lists are refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.sweep.cli import _worker_launch
from workbench.sweep.devices import DeviceError, check_available, parse_devices, worker_device
from workbench.sweep.factory import ENV_WORKER
from workbench.testing.fake_sweep.harness import open_study, run, sweep_cli_cmd, write_sweep


def test_worker_i_gets_device_i_mod_len_and_sees_only_its_gpu():
    devices = parse_devices("cuda:0, cuda:1")
    given = [worker_device(devices, i) for i in range(4)]
    assert [d.name for d in given] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert [d.env["CUDA_VISIBLE_DEVICES"] for d in given] == ["0", "1", "0", "1"]
    assert {d.override for d in given} == {"device=cuda"}  # its only visible GPU
    cpu = worker_device(["cpu"], 3)
    assert cpu.override == "device=cpu" and cpu.env == {"CUDA_VISIBLE_DEVICES": ""}


def test_gpu_indices_map_through_the_parents_visible_devices():
    # under SLURM the parent may see GPUs 4 and 6 only: its cuda:1 is physical GPU 6
    assert worker_device(["cuda:1"], 0, parent_visible="4,6").env["CUDA_VISIBLE_DEVICES"] == "6"


def test_each_worker_command_line_and_environment_carry_only_its_device():
    cmd, env = ["python", "-m", "app", "-m", "+sweep=x"], {"PATH": "/bin"}
    launches = [_worker_launch(cmd, env, ["cuda:0", "cuda:1"], i) for i in range(3)]
    assert [c[-1] for c, _ in launches] == ["device=cuda"] * 3
    assert [e["CUDA_VISIBLE_DEVICES"] for _, e in launches] == ["0", "1", "0"]
    assert [e[ENV_WORKER] for _, e in launches] == ["0", "1", "2"]
    assert _worker_launch(cmd, env, None, 1) == (cmd, {**env, ENV_WORKER: "1"})  # no --devices: unchanged


@pytest.mark.parametrize("text, bad", [("gpu7", "gpu7"), ("cuda:0,gpu7", "gpu7"), ("cuda", "cuda"),
                                       ("cuda:-1", "cuda:-1"), ("cpu,,cpu", "")])
def test_bad_entries_are_named(text, bad):
    with pytest.raises(DeviceError, match=f"{bad!r} is not a device; allowed: cpu or cuda:N"):
        parse_devices(text)


def test_a_gpu_this_machine_lacks_is_refused():
    with pytest.raises(DeviceError, match="cuda:2 is not available .*GPUs cuda:0..cuda:1"):
        check_available(["cuda:0", "cuda:2"], count=lambda: 2)
    with pytest.raises(DeviceError, match="no GPU"):
        check_available(["cuda:0"], count=lambda: 0)
    check_available(["cpu", "cpu"], count=lambda: 0)  # cpu needs no GPU (and no torch import)


@pytest.mark.parametrize("args, message", [
    (["--devices", "gpu7"], "--devices: 'gpu7' is not a device; allowed: cpu or cuda:N"),
    (["--devices", "cpu", "device=cpu"], "give --devices or a device= override, not both"),
])
def test_workbench_sweep_refuses_a_bad_device_list_in_one_line(tmp_path: Path, args, message):
    write_sweep(tmp_path, "dev", {"n_trials": 2})
    done = run(sweep_cli_cmd(tmp_path, "dev", args), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "sweeps_db").exists()  # nothing started


@pytest.mark.slow
def test_two_cpu_workers_each_train_on_their_own_device(tmp_path: Path):
    write_sweep(tmp_path, "dev", {"n_trials": 4, "pruner": None})
    done = run(sweep_cli_cmd(tmp_path, "dev", ["--workers", "2", "--devices", "cpu,cpu"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices: worker 0 on cpu, worker 1 on cpu" in done.stdout
    trials = open_study(tmp_path, "dev").get_trials(deepcopy=False)
    assert len(trials) == 4 and len({t.user_attrs["worker"] for t in trials}) == 2
    for t in trials:
        seen = json.loads((Path(t.user_attrs["output_dir"]) / "fake_device.json").read_text())
        assert seen == {"device": "cpu", "CUDA_VISIBLE_DEVICES": ""}
