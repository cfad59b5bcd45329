"""A new user's first hour (issue 10): each stumble that was seen has a test here.

README's set-up and tour run as written (scaled down); ``--help`` and a mistyped path answer
without loading PyTorch; a missing optional dependency is one line naming its extra; error
text keeps its square brackets; flags show no ``<bool>`` placeholder.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from txanomaly.cli import _MODULE_OF, app
from txanomaly.cli._common import missing_module_message

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
runner = CliRunner()
COMMANDS = tuple(_MODULE_OF)  # every command, as the console script dispatches them


# --------------------------------------------------------------------------- README
def bash_blocks(heading: str) -> list[str]:
    """The ```bash blocks of README's section ``heading`` (up to the next ``## ``)."""
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def shell_commands(block: str) -> list[list[str]]:
    """Each command of a bash block as words: comments dropped, ``\\`` lines and ``&&`` split."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1:]
    return commands


def test_readme_setup_installs_what_the_tour_runs_and_ci_runs_its_test_command():
    demo, tests = bash_blocks("Set-up: two commands")
    tour = [c for block in bash_blocks("A five-minute tour") for c in shell_commands(block)]
    install = next(c for c in shell_commands(demo) if "install" in c)
    if any(c[:2] == ["txanomaly", "serve"] for c in tour):
        assert ".[serve]" in install[-1], "the tour serves: the demo's install needs [serve]"
    assert tests.strip() in (ROOT / ".ci" / "run").read_text()


def test_readme_tour_activates_the_venv_and_writes_into_an_ignored_directory():
    """Regression: the tour ran bare ``txanomaly`` after a set-up that never activated the
    venv, and littered the repository root with a 50 MB scores.csv and more."""
    demo, _ = bash_blocks("Set-up: two commands")
    venv = next(c[-1] for c in shell_commands(demo) if c[1:3] == ["-m", "venv"])
    tour = shell_commands(bash_blocks("A five-minute tour")[0])
    assert tour[0] == ["source", f"{venv}/bin/activate"]
    assert tour[1][:2] == ["mkdir", "-p"] and tour[2] == ["cd", tour[1][2]]
    assert f"/{tour[1][2]}/" in (ROOT / ".gitignore").read_text().splitlines()


#: The tour's sizes, scaled down for the suite (options that are not here run as written).
SCALED = {"-n": "3000", "--users": "100", "--days": "10", "--epochs": "2"}


def scaled(words: list[str]) -> list[str]:
    """A tour command's arguments with its sizes scaled down, and few epochs everywhere."""
    out: list[str] = []
    for i, word in enumerate(words):
        out.append(SCALED[words[i - 1]] if i and words[i - 1] in SCALED else word)
    if out[0] in ("train", "evaluate", "tune") and "--epochs" not in out:
        out += ["--epochs", "2"]
    return out


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path, monkeypatch):
    """Every command of the tour, in order, through the real app (a renamed command or
    option fails here); ``serve`` starts and answers ``/healthz``; then the Python example."""
    monkeypatch.chdir(tmp_path)
    tour, python_example = bash_blocks("A five-minute tour")[0], README.split("```python\n")[1]
    for words in shell_commands(tour):
        if words[0] == "cd":
            monkeypatch.chdir(Path.cwd() / words[1])
        elif words[:2] == ["txanomaly", "serve"]:
            check_serve_answers(words[2:])
        elif words[0] == "txanomaly":
            result = runner.invoke(app, scaled(words[1:]))
            assert result.exit_code == 0, (words, result.output)
        elif words[0] == "mkdir":
            Path(words[-1]).mkdir(parents=True, exist_ok=True)
    for name in ("tx.json", "labels.csv", "features.parquet", "model", "scores.csv",
                 "report.html"):
        assert (Path.cwd() / name).exists(), name
    exec(python_example.split("```")[0], {})


def check_serve_answers(args: list[str]) -> None:
    """Run ``txanomaly serve ARGS`` (on a free port) until it answers ``/healthz``."""
    import httpx

    port = free_port()
    args = [str(port) if i and args[i - 1] == "--port" else a for i, a in enumerate(args)]
    proc = subprocess.Popen([sys.executable, "-c", "from txanomaly.cli import main; main()",
                             "serve", *args, "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"serve did not answer: {proc.communicate(timeout=5)[0]!r}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", markdown, re.M)}


@pytest.mark.parametrize("doc", ["README.md", *(f"docs/{p.name}" for p in
                                                 sorted((ROOT / "docs").glob("*.md")))])
def test_doc_links_point_into_the_repository_at_existing_headings(doc):
    """Regression: docs/service.md sent "DESIGN section 2" to README.md, which has none."""
    source = ROOT / doc
    for text, target in re.findall(r"\[([^\]]+)\]\(([^)\s]+)\)", source.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        assert file.is_relative_to(ROOT) and file.exists(), f"{doc}: {target}"
        if anchor:
            assert anchor in heading_anchors(file.read_text()), f"{doc}: {target}"
        else:  # a link that names a section must land on it
            assert not re.search(r"§|section", text, re.I), f"{doc}: [{text}]({target})"


# --------------------------------------------------------------------------- start-up
def run_main(argvs: list[list[str]], block: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``txanomaly ARGV`` for each argv in one fresh interpreter (``block``: module names
    made unimportable first); the last line of stdout lists the model libraries loaded."""
    code = (f"import sys\nfor m in {block.split()!r}: sys.modules[m] = None\n"
            "from txanomaly.cli import main\n"
            f"for argv in {argvs!r}:\n"
            "    sys.argv = ['txanomaly', *argv]\n"
            "    try:\n        main()\n    except SystemExit as e:\n"
            "        print('exit', e.code, file=sys.stderr)\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120)


def test_help_loads_no_model_libraries():
    """Regression: ``txanomaly --help`` took 3.2-3.7 s and ~440 MB loading PyTorch."""
    done = run_main([["--help"], *([c, "--help"] for c in COMMANDS)])
    assert done.returncode == 0, done.stderr
    assert done.stderr.split() == ["exit", "0"] * (1 + len(COMMANDS))
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_missing_input_is_reported_before_loading_torch(tmp_path):
    """Regression: ``train`` and ``score`` took 3.5 s to say that a file does not exist."""
    nope = str(tmp_path / "nope.json")
    done = run_main([["train", nope, "-o", "m"], ["score", nope, "-m", "m", "-o", "s.csv"],
                     ["report", "-m", str(tmp_path / "nomodel")],
                     ["evaluate", nope, "--labels", "l.csv"], ["tune", nope]])
    assert done.stdout.strip().splitlines()[-1] == "[]"
    lines = done.stderr.strip().splitlines()
    assert lines[0::2] == [f"error: {nope}: no such file"] * 2 + [
        f"error: {tmp_path / 'nomodel'}: no such model directory"] + [
        f"error: {nope}: no such file"] * 2
    assert lines[1::2] == ["exit 1"] * 5


@pytest.mark.parametrize("module", ["uvicorn", "fastapi", "sqlalchemy"])
def test_serve_without_the_serve_extra_is_one_line_naming_it(module, tmp_path):
    """Regression: ``serve`` without ``[serve]`` ended in a 38-line ModuleNotFoundError."""
    done = run_main([["serve", "--model", str(tmp_path)]], block=module)
    assert done.stderr.strip().splitlines() == [
        "error: txanomaly serve needs the [serve] extra: pip install 'txanomaly[serve]' "
        f"({module} is missing)", "exit 1"]


@pytest.mark.parametrize(("module", "extra"), [
    ("fastapi", "serve"), ("uvicorn.config", "serve"), ("sqlalchemy", "serve"),
    ("psycopg", "serve"), ("mangum", "serve"), ("prometheus_client", "serve"),
    ("httpx", "serve"), ("pyod.models.ecod", "peers"), ("minisom", "peers"),
    ("pandas", "peers")])
def test_every_optional_module_names_its_extra(module, extra):
    assert missing_module_message("cmd", module) == (
        f"txanomaly cmd needs the [{extra}] extra: pip install 'txanomaly[{extra}]' "
        f"({module.split('.')[0]} is missing)")


def test_a_missing_module_outside_the_extras_is_named():
    assert missing_module_message("train", "nosuchpkg.sub") == (
        "txanomaly train needs the Python package nosuchpkg, which is not installed")


# --------------------------------------------------------------------------- messages, help
def test_error_text_keeps_its_square_brackets(tmp_path, monkeypatch):
    """Regression: Rich read ``[red]`` in ``nope[red].json`` as markup and printed
    ``nope.json: no such file``."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["features", "nope[red].json", "-o", "f.parquet"])
    assert result.exit_code == 1
    assert "nope[red].json: no such file" in result.output


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_flags_without_a_type_placeholder(command):
    """Regression: ``--help`` printed ``<bool>`` after every flag, as if it took a value."""
    result = runner.invoke(app, [command, "--help"] if command else ["--help"])
    assert result.exit_code == 0
    assert "--help" in result.output and "<bool>" not in result.output
