"""``python -m planner gpus``: the inventory as JSON and in words (planner/hardware_text.py), fake NVML."""

from __future__ import annotations

import json

from fake_nvml import (  # noqa: E402
    A100,
    GONE_PID,
    RTX4090,
    FakeNVMLError,
    GiB,
    NoPermission,
    NotSupported,
    fresh_nvml,  # noqa: F401 - autouse: every test starts from a fresh NVML boundary
    gpu,
    install,
    make_pynvml,
    proc,
)

# --- CLI -------------------------------------------------------------------------------------------

def test_cli_gpus_json(monkeypatch, capsys):
    from planner.cli import main

    install(monkeypatch, make_pynvml(gpus=[A100, RTX4090]))
    assert main(["gpus", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in data["gpus"]] == ["NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"]
    assert data["reason"] is None and data["host"]["cpu_count"]


def test_cli_gpus_table(monkeypatch, capsys):
    from planner.cli import main

    gpus = [gpu(compute=[proc(GONE_PID, 5 * GiB)], graphics=[proc(GONE_PID + 1, None)]),
            gpu(RTX4090, temp=NotSupported(), compute=NoPermission(), graphics=NoPermission())]
    install(monkeypatch, make_pynvml(gpus=gpus, process_names={GONE_PID: "python"}))
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert lines[0] == "NVIDIA driver 550.54.15 · CUDA 12.4"
    header, a100, rtx = lines[1:4]
    assert header.split() == ["#", "name", "memory", "used", "/", "total", "util", "temp", "power", "/", "limit",
                              "CC", "MIG"]
    assert "NVIDIA A100-SXM4-80GB" in a100 and "1.0 / 80.0 GiB" in a100 and "37 %" in a100
    assert "45 C" in a100 and "250 / 400 W" in a100 and a100.split()[-2:] == ["8.0", "off"]
    assert rtx.split()[-7:] == ["n/a", "420", "/", "450", "W", "8.9", "n/a"]  # no temperature, no MIG
    # the columns line up
    assert len({line.index("GiB") for line in (a100, rtx)}) == 1
    assert len({line.index(" W") for line in (a100, rtx)}) == 1
    assert "GPU 0 processes:" in out and "GPU 1 processes: n/a" in out
    proc_lines = [line for line in lines if line.split()[:1] in ([str(GONE_PID)], [str(GONE_PID + 1)])]
    assert "python" in proc_lines[0] and "5.00 GiB" in proc_lines[0]
    assert proc_lines[1].split()[1:] == ["n/a", "n/a", "G"]
    assert any(line.startswith("host RAM: ") for line in lines)
    assert any(line.startswith("host CPU: ") for line in lines)
    assert "note: GPU 1: process list unavailable: Insufficient Permissions" in lines


def test_cli_gpus_without_gpu(monkeypatch, capsys):
    from planner.cli import main

    install(monkeypatch, make_pynvml(init_error=FakeNVMLError("NVML Shared Library Not Found")))
    assert main(["gpus"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "no NVIDIA GPU: NVML library not found: no NVIDIA driver"
    assert lines[1].startswith("host RAM: ") and lines[2].startswith("host CPU: ")
    assert main(["gpus", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gpus"] == [] and data["reason"] == "NVML library not found: no NVIDIA driver"


def test_cli_gpus_says_which_catalog_entry_and_which_total_plans_use(monkeypatch, capsys):
    """Issue 13.4: plans use NVML's own total; the catalog entry gives speed, price and the datasheet size."""
    from planner.cli import main

    mystery = gpu(RTX4090, name="NVIDIA Mystery 20GB", total=20 * GiB)
    install(monkeypatch, make_pynvml(gpus=[A100, gpu(RTX4090, total=24 * GiB), mystery]))
    assert main(["gpus"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "GPU 0: catalog A100 80GB SXM (80 GB datasheet); plans use the 80.00 GiB NVML reports" in lines
    assert "GPU 1: catalog RTX 4090 (24 GB datasheet); plans use the 24.00 GiB NVML reports" in lines
    assert any(line.startswith("GPU 2: not in the catalog; plans use the 20.00 GiB NVML reports, with the speed "
                               "and price of ") for line in lines)
