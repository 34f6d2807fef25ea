"""`manymodels init`: a new project from a template, its questions answered by prompt or by a file.

Templates live beside this module (`default/`, `minimal/`); every file in them is a Jinja
template with `{= answer =}` placeholders (not `{{ }}`, which GitHub workflows use, nor `[[ ]]`,
which Python and TOML do), named
with a `.tmpl` suffix so that our own linters leave it alone. In paths, a leading `dot-`
becomes `.` and a folder named `__package__` takes the package's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any

import jinja2
from pydantic import AfterValidator, BaseModel, ConfigDict, TypeAdapter, ValidationError

from manymodels.bundle.loader import BUNDLE_FILE, load_config
from manymodels.bundle.messages import describe, did_you_mean
from manymodels.bundle.source import SourceMap, load_yaml
from manymodels.distribution import check_requirement, requirement
from manymodels.errors import BundleError, ManymodelsError

SUFFIX = ".tmpl"


def _shaped(pattern: str, what: str) -> AfterValidator:
    """A check that an answer matches `pattern`, whose error says `what` it must be (not the regex)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


# Answers go into file contents and one folder's name: each is held to a plain shape.
ProjectName = Annotated[str, _shaped(r"[a-z][a-z0-9-]{0,62}", "lowercase letters, digits and dashes, from a letter")]
PackageName = Annotated[str, _shaped(r"[a-z_][a-z0-9_]{0,62}", "a Python package name: lowercase letters, digits, _")]
ColumnName = Annotated[str, _shaped(r"[A-Za-z_][A-Za-z0-9_]{0,127}", "a column name: letters, digits, _")]
OptionalColumn = Annotated[str, _shaped(r"([A-Za-z_][A-Za-z0-9_]{0,127})?",
                                        "a column name: letters, digits, _ (or nothing)")]
Steps = Annotated[str, _shaped(r"[1-9][0-9]{0,3}", "a whole number of steps, from 1")]
Branch = Annotated[str, _shaped(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}", "a git branch name")]
TrackingUri = Annotated[
    str,
    _shaped(r"databricks|[A-Za-z][A-Za-z0-9+.-]*:[^\s\"'\\$]+", "a tracking URI with a scheme (http://host:5000)"),
]
RelativePath = Annotated[str, _shaped(r"[^\s\"'\\$]+", "a path without spaces, quotes or $")]
PythonVersion = Annotated[str, _shaped(r"3\.1[1-9]", "a Python version from 3.11 (3.11, 3.12, ...)")]
# Goes into pyproject.toml (through tojson): a PEP 508 requirement of manymodels, nothing else.
ManymodelsRequirement = Annotated[str, AfterValidator(check_requirement)]


class InitError(ManymodelsError):
    """`init` cannot write the project (the folder holds files it would overwrite, an unknown template)."""

    exit_code = 2


class _Answers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MinimalAnswers(_Answers):
    """Answers of the `minimal` template: one bundle file."""

    project_name: ProjectName
    dataset_path: RelativePath
    segment_by: ColumnName
    label: ColumnName
    time_column: OptionalColumn  # given: a forecast model of the label along it
    horizon: Steps


class DefaultAnswers(_Answers):
    """Answers of the `default` template: a whole project with CI/CD."""

    project_name: ProjectName
    package: PackageName
    python_version: PythonVersion
    git_branch: Branch
    staging_tracking_uri: TrackingUri
    prod_tracking_uri: TrackingUri
    manymodels_requirement: ManymodelsRequirement


@dataclass(frozen=True)
class Question:
    """One thing a template asks: its key, the prompt, and its default (from the folder and earlier answers)."""

    key: str
    prompt: str
    default: Callable[[Path, Mapping[str, str]], str]


def _project_default(folder: Path, _: Mapping[str, str]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"project-{slug}".rstrip("-")
    return slug[:63]


def _fixed(value: str) -> Callable[[Path, Mapping[str, str]], str]:
    return lambda _folder, _answers: value


@dataclass(frozen=True)
class Template:
    """A project template: its folder beside this module, its questions and their typed answers."""

    name: str
    questions: tuple[Question, ...]
    answers: type[_Answers]

    def files(self) -> Traversable:
        """The template's folder of `.tmpl` files."""
        return resources.files(__name__).joinpath(self.name)

    def check(self, key: str, value: str) -> str | None:
        """Why `value` is no answer to question `key` (None when it is one): for a prompt to ask again."""
        field = self.answers.model_fields[key]
        try:
            TypeAdapter(Annotated[str, *field.metadata]).validate_python(value)
        except ValidationError as exc:
            return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        return None


_PROJECT = Question("project_name", "Project name (the bundle's name: lowercase, digits, dashes)", _project_default)

TEMPLATES: dict[str, Template] = {
    "default": Template(
        "default",
        (
            _PROJECT,
            Question(
                "package",
                "Python package under src/",
                lambda _f, answers: answers["project_name"].replace("-", "_"),
            ),
            Question("python_version", "Python version for CI", _fixed("3.11")),
            Question("git_branch", "Branch that production deploys come from", _fixed("main")),
            Question("staging_tracking_uri", "MLflow tracking URI of staging", _fixed("http://mlflow-staging:5000")),
            Question("prod_tracking_uri", "MLflow tracking URI of prod", _fixed("http://mlflow-prod:5000")),
            # Default: this manymodels, as it was installed here (a commit, a folder, a wheel or a version).
            Question("manymodels_requirement", "How the project installs manymodels", lambda _f, _a: requirement()),
        ),
        DefaultAnswers,
    ),
    "minimal": Template(
        "minimal",
        (
            _PROJECT,
            Question("dataset_path", "Training data (parquet), relative to the project", _fixed("data/sales.parquet")),
            Question("segment_by", "Column that names the segment", _fixed("store_id")),
            Question("label", "Column to predict", _fixed("sales")),
            Question("time_column", "Time column, to forecast the label along it (nothing: no forecast, a "
                                    "regression on the other columns)", _fixed("")),
            Question("horizon", "Steps ahead a forecast covers (with a time column)", _fixed("12")),
        ),
        MinimalAnswers,
    ),
}


def read_answers(path: Path, template: Template) -> tuple[dict[str, str], SourceMap]:
    """Answers from a YAML or JSON file (`key: value` per question), each problem naming file, line and key.

    Raises:
        BundleError: the file is unreadable, not a mapping, or names a question the template does not ask.
    """
    data, smap = load_yaml(path, str(path))
    if data is None or data == {}:
        return {}, smap
    if not isinstance(data, dict):
        raise BundleError(f"{path}:1: answers must be a mapping of question to answer")
    keys = [q.key for q in template.questions]
    problems = [
        f"{smap.prefix((key,))}{key}: template {template.name} asks no such question{did_you_mean(str(key), keys)}"
        f" (it asks {', '.join(keys)})"
        for key in data
        if key not in keys
    ]
    problems += [
        f"{smap.prefix((key,))}{key} must be a string, a number or true/false"
        for key, value in data.items()
        if key in keys and (value is None or isinstance(value, (dict, list)))
    ]
    if problems:
        raise BundleError(problems)
    return {str(k): _text(v) for k, v in data.items()}, smap


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resolve_answers(
    template: Template,
    folder: Path,
    given: Mapping[str, str],
    ask: Callable[[Question, str], str] | None = None,
    smap: SourceMap | None = None,
) -> _Answers:
    """Every question's answer: from `given`, else from `ask` (a prompt), else its default; then validated.

    Raises:
        BundleError: an answer is not allowed (located in the answers file when there is one).
    """
    answers: dict[str, str] = {}
    for question in template.questions:
        if question.key in given:
            answers[question.key] = given[question.key]
            continue
        default = question.default(folder, answers)
        answers[question.key] = ask(question, default) if ask is not None else default
    try:
        return template.answers.model_validate(answers)
    except ValidationError as exc:
        raise BundleError(describe(exc, template.answers, smap or SourceMap())) from exc


def _environment() -> jinja2.Environment:
    # The output is YAML, TOML, Python and Markdown, never HTML: escaping would corrupt it. Answers that
    # reach YAML or TOML go through `tojson`, and every answer is validated against a strict pattern.
    return jinja2.Environment(
        variable_start_string="{=",
        variable_end_string="=}",
        block_start_string="{=%",
        block_end_string="%=}",
        comment_start_string="{=#",
        comment_end_string="#=}",
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - not HTML (above)
    )


def _walk(node: Traversable, parts: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    found: list[tuple[tuple[str, ...], Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            if child.name != "__pycache__":
                found += _walk(child, (*parts, child.name))
        elif child.name.endswith(SUFFIX):
            found.append(((*parts, child.name), child))
    return found


def _target_path(parts: tuple[str, ...], answers: Mapping[str, Any]) -> Path:
    out: list[str] = []
    for i, part in enumerate(parts):
        if i == len(parts) - 1:
            part = part[: -len(SUFFIX)]
        if part == "__package__":
            part = str(answers["package"])
        elif part.startswith("dot-"):
            part = "." + part[len("dot-") :]
        out.append(part)
    return Path(*out)


def render(template: Template, answers: _Answers, folder: Path) -> list[Path]:
    """Write the template into `folder` (created if missing); returns the files written, relative to it.

    Nothing is written when any of those files exists already.

    Raises:
        InitError: `folder` is a file, or holds a file the template would write.
    """
    if folder.exists() and not folder.is_dir():
        raise InitError(f"{folder} exists and is not a folder")
    values = answers.model_dump()
    env = _environment()
    planned = [(_target_path(parts, values), source) for parts, source in _walk(template.files())]
    clashes = [str(rel) for rel, _ in planned if (folder / rel).exists()]
    if clashes:
        raise InitError(
            f"{folder} already has {len(clashes)} of the files template {template.name} writes "
            f"({', '.join(clashes[:5])}{', …' if len(clashes) > 5 else ''}); nothing was written: "
            "choose a new or empty folder"
        )
    rendered = []
    for rel, source in planned:
        try:
            text = env.from_string(source.read_text(encoding="utf-8")).render(**values)
        except jinja2.TemplateError as exc:  # a defect of the template itself, not of the answers
            raise ManymodelsError(f"template {template.name}, {rel}: {exc}") from exc
        rendered.append((rel, text))
    for rel, text in rendered:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return [rel for rel, _ in rendered]


def check_project(folder: Path) -> list[str]:
    """The targets of the bundle just written, each loaded and resolved (a broken template fails here, not later)."""
    file = folder / BUNDLE_FILE
    document, _ = load_yaml(file, BUNDLE_FILE)
    names: list[str | None] = [*(document.get("targets") or {})] or [None]  # None: the bundle's default target
    return [load_config(file, name).target for name in names]


def next_steps(folder: Path, answers: _Answers) -> list[str]:
    """The commands that take a freshly made project to its first trained models."""
    steps = [f"cd {folder}"]
    if isinstance(answers, DefaultAnswers):
        return [
            *steps,
            "python -m venv .venv && . .venv/bin/activate && python -m pip install -e '.[dev]'",
            f"python -m {answers.package}.example_data --out data",
            "manymodels run train",
            "git init && git add -A && git commit -m 'manymodels init'   # then push: .github/workflows run",
        ]
    if isinstance(answers, MinimalAnswers):
        return [*steps, f"# put the training rows at {answers.dataset_path}, then:", "manymodels validate",
                "manymodels run train"]
    return steps


def install_warnings(answers: _Answers) -> list[str]:
    """What in the answers will not install on another machine (CI, a colleague's laptop)."""
    wanted = getattr(answers, "manymodels_requirement", "")
    if "file:" not in wanted:
        return []
    return [
        f"pyproject.toml asks for {wanted}: a path on this machine, which CI and other machines cannot install; "
        "before pushing, point it at a commit (manymodels @ git+https://…@<commit>) or a release "
        "(init --config-file with manymodels_requirement does it)"
    ]


def template(name: str) -> Template:
    """The template called `name`.

    Raises:
        InitError: no such template.
    """
    if name not in TEMPLATES:
        raise InitError(f"no template {name!r}{did_you_mean(name, TEMPLATES)}; templates: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
