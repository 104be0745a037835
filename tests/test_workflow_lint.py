"""`snakemake --lint` on the DAG: only the lints this workflow accepts by design, each with its reason."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lints accepted on every rule.
ACCEPTED = {
    "Specify a conda environment or container for each rule.":
        "one environment serves the whole DAG (requirements.txt + constraints.txt, or environment.yml): every job "
        "runs the interpreter that runs Snakemake, forked from the prefork server",
    "Shell command directly uses variable PY from outside of the rule":
        "PY is that interpreter; as a param its path would count as provenance, and moving the venv would rerun "
        "every job",
}
# Lints accepted on one rule.
ACCEPTED_IN_RULE = {
    ("history", "Param history is a prefix of input or output file but hardcoded"):
        "the score jobs' history folder, which no declared file lies in: `history` is a sibling file whose name "
        "merely begins with the folder's",
    ("report", "Param samples is a prefix of input or output file but hardcoded"):
        "the root of every cell's sample folder, of which the report's inputs are hundreds of manifests",
}


def lints(config: str, workdir: Path) -> set:
    """(where, lint title) pairs from `snakemake --lint` with a shipped config; where is `rule <name>` or
    `snakefile <path>`."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--lint",
                             "--configfile", str(ROOT / "workflows/config" / config)],
                            cwd=workdir, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                            timeout=300)
    found, where = set(), None
    for line in (result.stdout + result.stderr).splitlines():
        if header := re.match(r"Lints for (rule \S+|snakefile \S+?):?(?: \(|$)", line):
            where = header.group(1)
        elif item := re.match(r"    \* (.+?):?$", line):
            assert where, f"a lint before any 'Lints for' header: {line}"
            found.add((where, re.sub(r" in line \d+\.?$", "", item.group(1))))
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert (result.returncode == 1) == bool(found), f"exit {result.returncode}, lints parsed: {found}"
    return found


# demo.yaml has one shard per cell (rule generate_cell), demo-random.yaml two (generate_shard + manifest).
@pytest.mark.parametrize("config", ["demo.yaml", "demo-random.yaml"])
def test_the_workflow_has_no_lint_but_those_it_accepts_by_design(config, tmp_path):
    found = lints(config, tmp_path)  # (snakemake writes its log into the working directory)
    unexpected = sorted((where, title) for where, title in found
                        if title not in ACCEPTED and (where.removeprefix("rule "), title) not in ACCEPTED_IN_RULE)
    assert not unexpected, "\n".join(f"{where}: {title}" for where, title in unexpected)
    # the parse saw the lints it accepts, so a change of snakemake's output format cannot pass unseen
    assert ("rule score", "Shell command directly uses variable PY from outside of the rule") in found
