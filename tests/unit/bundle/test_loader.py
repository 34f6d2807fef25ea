"""Loading manymodels.yml: targets, variables, includes, and one located line per problem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from manymodels.bundle import load_config
from manymodels.bundle.schema import bundle_json_schema
from manymodels.errors import BundleError

BASE = """\
bundle:
  name: shop
variables:
  root:
    default: data
  rounds:
    default: 50
targets:
  dev:
    default: true
  prod:
    tracking_uri: http://mlflow.example:5000
    variables:
      root: /mnt/prod
    resources:
      models:
        demand:
          min_rows: 50
resources:
  datasets:
    sales:
      path: ${var.root}/sales.parquet
  models:
    demand:
      dataset: sales
      segment_by: store
      label: sales
      estimator:
        params:
          num_boost_round: ${var.rounds}
      split:
        test_size: 0.2
"""


def write(tmp_path: Path, text: str, name: str = "manymodels.yml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, **kwargs: object) -> list[str]:
    with pytest.raises(BundleError) as info:
        load_config(write(tmp_path, text), **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def test_default_target_and_embedded_tracking(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.target == "dev"
    assert config.tracking_uri == f"sqlite:///{tmp_path / '.manymodels' / 'mlflow.db'}"
    model = config.model("demand")
    assert model.segment_by == ["store"]  # one column may be given as a string
    assert model.estimator.params["num_boost_round"] == 50  # a whole-value reference keeps its type
    assert config.resolved.resources.datasets["sales"].path == "data/sales.parquet"


def test_target_overrides_resources_and_variables(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), target="prod")
    assert config.tracking_uri == "http://mlflow.example:5000"
    assert config.embedded_artifacts is None
    assert config.model("demand").min_rows == 50
    assert config.model("demand").label == "sales"  # untouched keys survive the merge
    assert config.resolved.resources.datasets["sales"].path == "/mnt/prod/sales.parquet"


def test_variable_precedence_cli_over_env_over_target_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    env = {"MANYMODELS_VAR_root": "/env"}
    ds = lambda c: c.resolved.resources.datasets["sales"].path  # noqa: E731
    assert ds(load_config(path, "prod", {"root": "/cli"}, env)) == "/cli/sales.parquet"
    assert ds(load_config(path, "prod", {}, env)) == "/env/sales.parquet"
    assert ds(load_config(path, "prod", {}, {})) == "/mnt/prod/sales.parquet"
    assert ds(load_config(path, "dev", {}, {})) == "data/sales.parquet"


def test_a_tracking_uri_left_empty_by_a_variable_is_an_error_not_the_embedded_store(tmp_path: Path) -> None:
    text = BASE.replace("tracking_uri: http://mlflow.example:5000", "tracking_uri: ${var.server}").replace(
        "variables:\n  root:", "variables:\n  server:\n    default: http://mlflow.example:5000\n  root:", 1)
    line = text.splitlines().index("    tracking_uri: ${var.server}") + 1
    assert load_config(write(tmp_path, text), "prod", environ={}).tracking_uri == "http://mlflow.example:5000"
    assert problems(tmp_path, text, target="prod", environ={"MANYMODELS_VAR_server": ""}) == [
        f"manymodels.yml:{line}: tracking_uri is empty (a variable set to ''?): name the MLflow server, or leave it "
        "out for the embedded store; got ''"
    ]


def test_wrong_type_names_file_line_and_key(tmp_path: Path) -> None:
    text = BASE.replace("test_size: 0.2", "test_size: 2")
    line = text.splitlines().index("        test_size: 2") + 1
    assert problems(tmp_path, text) == [
        f"manymodels.yml:{line}: resources.models.demand.split.test_size must be a float in (0, 1); got 2"
    ]


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    text = BASE.replace("      label: sales", "      labl: sales")
    line = text.splitlines().index("      labl: sales") + 1
    found = problems(tmp_path, text)
    assert f"manymodels.yml:{line}: resources.models.demand.labl is not a known key (did you mean 'label'?)" in found
    assert any("resources.models.demand.label is required" in p for p in found)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "bundle:\n  name: [unclosed\nresources: {}\n")
    assert len(found) == 1 and found[0].startswith("manymodels.yml:") and "invalid YAML" in found[0]


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    found = problems(tmp_path, "bundle:\n  name: a\n  name: b\n")
    assert found == ["manymodels.yml:3: duplicate key bundle.name"]


def test_undefined_variable_is_located(tmp_path: Path) -> None:
    text = BASE.replace("${var.root}/sales", "${var.rooot}/sales")
    line = text.splitlines().index("      path: ${var.rooot}/sales.parquet") + 1
    found = problems(tmp_path, text)
    assert found == [f"manymodels.yml:{line}: resources.datasets.sales.path: ${{var.rooot}} is not declared "
                     "in variables (did you mean 'root'?)"]


def test_variable_without_value(tmp_path: Path) -> None:
    text = BASE.replace("  root:\n    default: data\n", "  root:\n    description: none given\n")
    found = problems(tmp_path, text, environ={})
    assert len(found) == 1 and "variable 'root' has no value" in found[0] and "MANYMODELS_VAR_root" in found[0]


def test_undeclared_cli_variable(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE, variables={"roott": "x"})
    assert found == ["--var roott: no variable 'roott' is declared in variables (did you mean 'root'?)"]


def test_unknown_target(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE, target="prdo")
    assert found == ["manymodels.yml: no target 'prdo' (did you mean 'prod'?)"]


def test_includes_merge_and_report_their_own_lines(tmp_path: Path) -> None:
    write(tmp_path, "resources:\n  models:\n    other:\n      dataset: sales\n      segment_by: [store]\n"
                    "      label: sales\n      split: {test_size: 5}\n", "resources/other.yml")
    text = BASE + "include:\n  - resources/*.yml\n"
    found = problems(tmp_path, text)
    assert found == ["resources/other.yml:7: resources.models.other.split.test_size must be a float in (0, 1); "
                     "got 5"]


def test_name_defined_twice_across_includes(tmp_path: Path) -> None:
    write(tmp_path, "resources:\n  datasets:\n    sales:\n      path: x.parquet\n", "more.yml")
    found = problems(tmp_path, BASE + "include: [more.yml]\n")
    assert len(found) == 1 and found[0].startswith("more.yml:3: resources.datasets.sales is already defined at "
                                                   "manymodels.yml:")


def test_json_schema_covers_resources() -> None:
    schema = bundle_json_schema()
    text = json.dumps(schema)
    assert "segment_by" in text and "test_size" in text
    assert schema["properties"]["resources"]


def test_engine_kind_that_does_not_exist_yet(tmp_path: Path) -> None:
    text = BASE.replace("  prod:\n", "  prod:\n    engine:\n      kind: ray\n")
    line = text.splitlines().index("      kind: ray") + 1
    assert problems(tmp_path, text, target="prod") == [
        f"manymodels.yml:{line}: targets.prod.engine.kind must be one of 'local' or 'spark'; got 'ray'"
    ]
    for key in ("master: local[2]", "staging: s3://bucket/tmp"):
        spark_only = BASE.replace("  prod:\n", f"  prod:\n    engine:\n      {key}\n")
        assert problems(tmp_path, spark_only, target="prod")[0].endswith(
            "targets.prod.engine master, remote, conf and staging are for kind spark")


def test_empty_bundle_file(tmp_path: Path) -> None:
    assert problems(tmp_path, "") == ["manymodels.yml:1: bundle is required"]


def test_every_include_that_matches_nothing_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "resources:\n  datasets:\n    more:\n      path: more.parquet\n", "extra/ok.yml")
    write(tmp_path, "resourcess: {}\n", "extra/bad.yml")
    found = problems(tmp_path, BASE + "include: [nope/*.yml, extra/*.yml, also-missing.yml]\n")
    assert [line.split(": ", 1)[1] for line in found] == [
        "include[0] 'nope/*.yml' matches no file",
        "resourcess is not allowed in an included file (did you mean 'resources'?)",
        "include[2] 'also-missing.yml' matches no file",
    ]


@pytest.mark.parametrize(("cutoff", "expected"), [("2005", "2005"), ("2025-10-01", "2025-10-01"), ("2005.5", "2005.5")])
def test_a_cutoff_yaml_reads_as_a_number_or_a_date_is_taken_as_text(tmp_path: Path, cutoff: str,
                                                                     expected: str) -> None:
    text = BASE.replace("        test_size: 0.2\n", f"        by: year\n        cutoff: {cutoff}\n")
    config = load_config(write(tmp_path, text), target="dev")
    assert config.model("demand").split.cutoff == expected


def _anchor_bomb(levels: int) -> str:
    """A "billion laughs" bundle: each anchor a list of nine aliases of the one before (9**levels values)."""
    lines = ["bundle: {name: bomb}", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    lines.append(f"resources: {{models: {{m: *a{levels}}}}}")
    return "\n".join(lines) + "\n"


def test_an_anchor_bomb_is_one_line_in_a_second_and_little_memory(tmp_path: Path) -> None:
    """`manymodels validate` on a 600-byte bundle that expands to 9**9 values: refused from the parsed
    nodes, never built (it took 22.5 GB and an OOM kill). Run in its own process to measure its peak memory."""
    import subprocess
    import sys
    import time

    (tmp_path / "manymodels.yml").write_text(_anchor_bomb(9))
    probe = (
        "import json, sys\n"
        "from manymodels.cli.main import main\n"
        "sys.argv = ['manymodels', '--bundle', sys.argv[1], 'validate']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        # VmHWM: this process's peak memory since its exec (getrusage's maxrss keeps pytest's from the fork)
        "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0].split()[1]\n"
        "print(json.dumps({'code': code, 'rss_kb': int(peak)}))\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          check=False)
    seconds = time.monotonic() - started
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "manymodels.yml:7: the YAML expands to more than 100,000 values through its aliases (&anchor / *alias); "
        "a bundle is far smaller"
    ]
    assert seconds < 30 and result["rss_kb"] < 200 * 1024, (seconds, result)


def test_an_alias_inside_its_own_anchor_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "manymodels.yml").write_text("bundle: {name: loop}\nresources: &r {models: {m: *r}}\n")
    with pytest.raises(BundleError, match=r"manymodels.yml:2: an alias refers to the value that contains it"):
        load_config(tmp_path)


def test_a_long_value_is_quoted_short(tmp_path: Path) -> None:
    (tmp_path / "manymodels.yml").write_text(
        "bundle: {name: long}\nresources:\n  models:\n    m:\n      dataset: " + "x" * 5000 + "\n      label: 3\n"
    )
    with pytest.raises(BundleError) as caught:
        load_config(tmp_path)
    assert all(len(line) < 600 for line in caught.value.problems), caught.value.problems


def test_includes_stay_inside_the_bundle_folder_and_never_echo_what_is_outside(tmp_path: Path) -> None:
    """A pull request's bundle must not read files beside or above it (validate runs in CI on it)."""
    hidden = "OUTSIDE_CONTENT_MARKER"
    outside = tmp_path / "outside.yml"
    outside.write_text(f"{hidden}: 1\n")
    project = tmp_path / "project"
    write(project, "resources: {}\n", "sub/fine.yml")
    (project / "link.yml").symlink_to(outside)
    (project / "folder.yml").mkdir()
    os.mkfifo(project / "pipe.yml")  # reading a pipe would block validate forever
    (project / "binary.yml").write_bytes(b"resources: {}\n\xff\xfe\n")
    (project / "huge.yml").write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    patterns = [
        "../outside.yml",
        "sub/../../outside.yml",
        "**/../../*.yml",
        str(outside),
        "~/outside.yml",
        "link.yml",
        "folder.yml",
        "pipe.yml",
        "binary.yml",
        "huge.yml",
    ]
    text = BASE + "include:\n" + "".join(f"  - {json.dumps(p)}\n" for p in patterns)
    found = problems(project, text)
    shown = [line.split(": ", 1)[1] for line in found]
    assert shown == [
        "include[0] '../outside.yml' leaves the bundle's folder ('..'); includes stay inside it",
        "include[1] 'sub/../../outside.yml' leaves the bundle's folder ('..'); includes stay inside it",
        "include[2] '**/../../*.yml' leaves the bundle's folder ('..'); includes stay inside it",
        f"include[3] '{outside}' must be a path relative to the bundle's folder",
        "include[4] '~/outside.yml' must be a path relative to the bundle's folder",
        "include[5] 'link.yml' leaves the bundle's folder through a link: link.yml",
        "cannot read bundle file: not a regular file",
        "cannot read bundle file: not a regular file",
        "bundle file is not UTF-8 text (byte 14)",
        f"bundle file is {(2 << 20) + 3:,} bytes; at most {1 << 20:,} are read",
    ]
    assert found[6].startswith("folder.yml: ") and found[7].startswith("pipe.yml: ")
    assert found[8].startswith("binary.yml:2: ") and found[9].startswith("huge.yml: ")
    assert all(hidden not in line for line in found)


@pytest.mark.parametrize("nested", ["[" * 100_000 + "]" * 100_000, "{a: " * 3000 + "1" + "}" * 3000,
                                    "{a: " * 150 + "1" + "}" * 150])
def test_deep_nesting_is_one_located_line_not_a_recursion_error(tmp_path: Path, nested: str) -> None:
    (tmp_path / "manymodels.yml").write_text("bundle: {name: deep}\nresources: " + nested + "\n")
    with pytest.raises(BundleError, match=r"manymodels.yml(:2)?: the YAML nests deeper than 100 levels"):
        load_config(tmp_path)
