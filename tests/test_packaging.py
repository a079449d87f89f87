"""constraints.txt: the tested versions a fresh install gets (the README's commands use it)."""

import os
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO


def _pins():
    pins = {}
    with open(os.path.join(REPO, "constraints.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, version = line.split("==")
                pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_is_pinned_within_what_pyproject_allows():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    requirements = [Requirement(text) for text in
                    project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]]
    pins = _pins()
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # e.g. tensorflow on macOS: not installed on this platform.
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement.specifier}"


def test_the_readme_commands_install_with_the_constraints():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    for marker in ("train-command", "test-command"):
        command = re.search(f"<!-- {marker} -->\\n```bash\\n(.*)\\n```", readme).group(1)
        assert "pip install -c constraints.txt " in command, command
