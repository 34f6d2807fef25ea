"""`manymodels`: init, validate, schema, train, evaluate, promote, rollback, models, score, run, runs, show,
deploy, destroy, gc, summary.

Exit codes: 0 success; 1 the work failed (every segment failed, a task failed); 2 bad input
(bundle, data, command line), one line per problem, no traceback unless --debug.

The commands live by what they act on: `fleet` (a model family), `operate` (a target), `serve`; this
module holds the bundle's own (validate, schema, init) and the entry point.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from manymodels.bundle import check_bundle, data_warnings
from manymodels.bundle.schema import bundle_json_schema
from manymodels.cli import fleet, operate, render, render_jobs, serve
from manymodels.cli.app import BundleOpt, TargetOpt, VarOpt, app, guarded, load
from manymodels.errors import BundleError

__all__ = ["app", "fleet", "main", "operate", "serve"]


@app.command()
def validate(
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    no_data: Annotated[bool, typer.Option("--no-data", help="Skip the dataset checks.")] = False,
) -> None:
    """Check the bundle: schema, references, variables, import paths, datasets and their columns."""

    def body() -> int:
        config = load(target, var)
        from manymodels.jobs.context import trust_problems

        problems = check_bundle(config, data=not no_data) + trust_problems(config)
        if problems:
            raise BundleError(problems)
        for line in [] if no_data else data_warnings(config):
            render.err.print(f"warning: {line}", markup=False)
        res = config.resolved.resources
        render.out.print(
            f"{config.file.name}: valid for target {config.target} "
            f"({len(res.datasets)} datasets, {len(res.models)} models, {len(res.jobs)} jobs)"
        )
        return 0

    guarded(body)


@app.command()
def schema() -> None:
    """Print the bundle's JSON schema (for editors)."""
    sys.stdout.write(json.dumps(bundle_json_schema(), indent=2) + "\n")


@app.command("init")
def init_cmd(
    arguments: Annotated[
        list[str],
        typer.Argument(
            metavar="[TEMPLATE] DIR",
            help="The template (default: default) and the new project's folder (new, or empty of its files).",
            show_default=False,
        ),
    ],
    config_file: Annotated[
        Path | None,
        typer.Option("--config-file", help="Answers to the template's questions (YAML or JSON): no prompts."),
    ] = None,
) -> None:
    """Make a new project: `default` (bundle with dev/staging/prod, src/, tests, CI/CD workflows) or `minimal`.

    Asks the template's questions at a terminal; with --config-file, or without a terminal,
    what is not answered takes its default.
    """
    from manymodels import templates

    def body() -> int:
        if len(arguments) > 2:
            raise templates.InitError(f"expected [TEMPLATE] DIR, got {len(arguments)} arguments")
        name, folder = ("default", arguments[0]) if len(arguments) == 1 else arguments
        chosen = templates.template(name)
        given, smap = templates.read_answers(config_file, chosen) if config_file else ({}, None)
        interactive = config_file is None and sys.stdin.isatty()

        def ask(question: templates.Question, default: str) -> str:
            if interactive:
                return str(typer.prompt(question.prompt, default=default, value_proc=checked(question.key)))
            render.err.print(f"{question.key}: {default} (default)", markup=False)
            return default

        def checked(key: str) -> Callable[[str], str]:
            def check(value: str) -> str:
                problem = chosen.check(key, value)
                if problem:  # click shows it and asks again
                    raise typer.BadParameter(f"{key} {problem}")
                return value

            return check

        project = Path(folder)
        answers = templates.resolve_answers(chosen, project, given, ask, smap)
        written = templates.render(chosen, answers, project)
        targets = templates.check_project(project)
        render_jobs.init_summary(chosen.name, project, written, targets, templates.next_steps(project, answers))
        for line in templates.install_warnings(answers):
            render.err.print(f"warning: {line}", markup=False)
        return 0

    guarded(body)



def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
