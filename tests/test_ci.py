"""CI runs exactly the README's test command; the Quickstart holds exactly two commands."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_command(which: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_commands.py"), which],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_quickstart_commands_install_then_run_the_main_job_and_the_tests():
    main, tests = readme_command("main"), readme_command("tests")
    assert "pip install" in main and "python sweeps/grid.py" in main
    assert "pip install" in tests and "[test]" in tests and "pytest" in tests


def test_ci_runs_the_readme_command_and_fails_when_no_test_ran(tmp_path):
    script = (ROOT / ".ci" / "run").read_text()
    assert "readme_commands.py tests" in script and "python -m pytest" not in script
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    for name in ("run", "readme_commands.py"):
        (repo / ".ci" / name).write_text((ROOT / ".ci" / name).read_text())
    (repo / "test_one.py").write_text("def test_one():\n    pass\n")
    (repo / "README.md").write_text(
        "## Quickstart\n\n```bash\necho main\n"
        "python -m pytest -q -p no:cacheprovider -k no_such_test test_one.py\n```\n")
    done = subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True,
                          cwd=repo, timeout=120)
    assert done.returncode == 5, done.stdout + done.stderr  # pytest collected nothing
    assert "no tests" in done.stderr


def test_a_readme_without_two_commands_is_rejected(tmp_path):
    sys.path.insert(0, str(ROOT / ".ci"))
    import readme_commands

    text = "# x\n\n## Quickstart\n\n```bash\npip install -e .\n```\n"
    try:
        readme_commands.quickstart_commands(text)
    except SystemExit as stop:
        assert "exactly 2 commands" in str(stop.code)
    else:
        raise AssertionError("a one-command Quickstart was accepted")
