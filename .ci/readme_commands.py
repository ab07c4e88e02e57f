"""Print one of the README's two Quickstart commands, so CI runs exactly what newcomers run.

Usage: python .ci/readme_commands.py {main|tests}
The Quickstart section's first fenced code block must hold exactly two commands (lines that
are neither blank nor comments): the first installs and runs the main job, the second installs
and runs the tests.
"""

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_commands(text: str) -> list[str]:
    section = text.split("## Quickstart", 1)
    if len(section) != 2:
        sys.exit(f"error: {README} has no '## Quickstart' section")
    parts = section[1].split("```")
    if len(parts) < 3:
        sys.exit(f"error: {README}: the Quickstart section has no fenced code block")
    block = parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
    commands = [
        line.strip() for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    if len(commands) != 2:
        sys.exit(f"error: {README}: the Quickstart block must hold exactly 2 commands, "
                 f"found {len(commands)}: {commands}")
    return commands


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "tests"
    if which not in ("main", "tests"):
        sys.exit("usage: python .ci/readme_commands.py {main|tests}")
    print(quickstart_commands(README.read_text())[0 if which == "main" else 1])
