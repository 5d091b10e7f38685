"""The launch lines of docs/multi-node.md are what they claim: valid bash, arguments torchrun's
own parser accepts (several nodes, a c10d rendezvous, ``densessl`` run without python), and a
``densessl pretrain`` command line densessl's parser accepts. No SLURM is needed: the SLURM
variables are given sample values."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser

from densessl.cli import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "multi-node.md"
BLOCKS = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
SAMPLE = {"$SLURM_NNODES": "2", "$head": "node001", "$SLURM_JOB_ID": "42", "$resume": "--resume"}


def launch_line(block: str) -> list[str]:
    """The block's torchrun command, continuation lines joined, SLURM variables filled in."""
    joined = block.replace("\\\n", " ")
    line = next(line for line in joined.splitlines() if "torchrun" in line)
    for name, value in SAMPLE.items():
        line = line.replace(f'"{name}', f'"{value}').replace(name, value)
    words = shlex.split(line)
    return words[words.index("torchrun") + 1 :]


def test_the_page_has_the_two_launch_blocks():
    assert len(BLOCKS) == 2 and "srun torchrun" in BLOCKS[1] and "#SBATCH --nodes" in BLOCKS[1]


@pytest.mark.parametrize("block", BLOCKS, ids=["by_hand", "slurm"])
def test_a_launch_block_is_bash_torchrun_and_densessl_accept(block, tmp_path):
    script = tmp_path / "launch.sh"
    script.write_text(block)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    run = get_args_parser().parse_args(launch_line(block))
    assert run.nnodes == "2" and int(run.nproc_per_node) == 8
    assert run.rdzv_backend == "c10d" and run.rdzv_endpoint.endswith(":29500") and run.no_python
    assert run.training_script == "densessl"
    args = build_parser().parse_args(run.training_script_args)
    assert args.command == "pretrain" and args.method == "densecl"
    assert args.out.startswith("/shared/")  # a folder every node reads, for --resume
