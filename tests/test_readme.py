"""The README's two commands are the ones CI runs."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line for b in blocks for line in b.splitlines() if "pip install" in line]


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    test_cmd = next(c for c in commands if "pytest" in c)
    assert test_cmd in (REPO / ".ci" / "run").read_text().splitlines()


def test_readme_main_command_installs_torch_first_and_sweeps():
    main_cmd = next(c for c in readme_commands() if "benchmark sweep" in c)
    assert main_cmd.index("torch==2.13.0") < main_cmd.index("-e .")
