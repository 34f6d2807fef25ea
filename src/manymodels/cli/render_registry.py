"""The registry's tables in the terminal: an evaluation's verdicts, a promotion and a rollback, the models and their
versions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # the jobs layer pulls in MLflow; `--help` and `validate` need none of it

    from manymodels.jobs.evaluate import Evaluation
    from manymodels.jobs.promote import PromoteOutcome, RollbackOutcome
    from manymodels.registry.version_info import VersionInfo

from manymodels.cli.render import cell_text, err, int_text, out, safe, when_text

_STATUS_STYLE = {"won": "green", "new": "green", "lost": "red", "failed": "red", "tied": "", "no_data": "yellow",
                 "insufficient": "yellow"}


def evaluation_summary(evaluation: Evaluation, limit: int = 20) -> None:
    """Counts, the gate's verdict and the first segments of an evaluation table."""
    counts = evaluation.counts
    champion = f"version {evaluation.champion_version}" if evaluation.champion_version else "none yet"
    head = Table(title=f"evaluate {evaluation.model}", show_header=False, title_justify="left")
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("challenger", f"run {evaluation.challenger_run}")
    head.add_row("champion", champion)
    head.add_row("on", f"{evaluation.data} ({evaluation.metric})")
    head.add_row(
        "segments",
        ", ".join(f"{n:,} {status}" for status, n in counts.items() if status != "promote"),
    )
    promoting = evaluation.table[evaluation.table["decision"] == "promote"]
    by = ""
    if "candidate" in promoting.columns and len(promoting):
        wins = promoting["candidate"].value_counts()
        by = " (" + ", ".join(f"{name} {int(n):,}" for name, n in wins.items()) + ")"
    head.add_row("would promote", f"{counts['promote']:,} segment(s){by}")
    if "basis" in evaluation.table.columns:
        on_cv = int((evaluation.table["basis"] == "cv").sum())
        if on_cv:
            head.add_row("basis", f"{on_cv:,} segment(s) compared on cross-validation folds of their training rows "
                                  "(promotion.basis cv), the rest on the evaluation rows")
    verdict = Text("passed", style="green") if evaluation.passed else Text.assemble(
        ("failed", "red"), safe(": " + "; ".join(evaluation.problems)))
    if evaluation.unchanged:
        verdict += " (nothing changed since the champion trained: nothing to promote)"
    elif evaluation.passed and evaluation.nothing_to_promote:
        why = "no segment improved"
        if counts["insufficient"]:
            why += f"; {counts['insufficient']:,} had too few evaluation rows to tell (promotion.min_eval_rows)"
        verdict += f" ({why}: nothing to promote, the champion keeps serving)"
    head.add_row("gate", verdict)
    if evaluation.artifact:
        head.add_row("saved", f"{evaluation.artifact} in run {evaluation.challenger_run}")
    out.print(head)
    for line in evaluation.warnings:
        err.print(f"warning: {line}", markup=False)
    table = evaluation.table
    if limit == 0 or len(table) == 0:
        return
    keys = list(table.columns[: list(table.columns).index("run_status")])
    shown = table.head(limit)  # evaluate orders it: the worst regressions first
    t = Table(title=f"segments ({min(limit, len(table)):,} of {len(table):,})", title_justify="left")
    for col in [*keys, "rows", "champion", "challenger", "change", "status", "decision", "reason"]:
        t.add_column(col, overflow="fold" if col == "reason" else "ellipsis")
    for _, row in shown.iterrows():
        style = _STATUS_STYLE.get(str(row["status"]), "")
        status = Text(safe(str(row["status"])), style=style)
        change = "–" if row["change"] != row["change"] else f"{row['change']:+.2%}"
        t.add_row(
            *[cell_text(row[c]) for c in keys],
            f"{int(row['rows']):,}",
            cell_text(row["champion"]),
            cell_text(row["challenger"]),
            change,
            status,
            str(row["decision"]),
            cell_text(row["reason"]),
        )
    out.print(t)


def promote_summary(outcome: PromoteOutcome) -> None:
    """What a promotion did."""
    table = Table(title=f"promote {outcome.model}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("registered model", outcome.registered_model)
    if outcome.version is None:
        stays = f"version {outcome.previous}" if outcome.previous else "no champion"
        table.add_row("champion", f"unchanged ({stays}): no segment of run {outcome.challenger_run} may be promoted")
    else:
        before = f" (was version {outcome.previous}, now alias previous)" if outcome.previous else ""
        table.add_row("champion", f"version {outcome.version}{before}")
        table.add_row("segments", f"{outcome.promoted:,} from run {outcome.challenger_run}, {outcome.kept:,} kept")
        table.add_row("run", str(outcome.run_id))
    out.print(table)
    for line in outcome.warnings:
        err.print(f"warning: {line}", markup=False)


def rollback_summary(outcome: RollbackOutcome) -> None:
    """Which version serves after a rollback."""
    out.print(
        f"{outcome.registered_model}: champion is version {outcome.after} (was {outcome.before}, now alias previous)"
    )


def models_table(rows: list[dict[str, Any]]) -> None:
    """Every model family of the bundle: registered model, champion, versions, latest run."""
    table = Table(title="models", title_justify="left")
    for col in ("model", "registered model", "champion", "segments", "versions", "latest run"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["model"],
            r["registered_model"],
            f"version {r['champion']}" if r["champion"] else "–",
            int_text(r["segments"]),
            str(r["versions"]),
            r["latest_run"] or "–",
        )
    out.print(table)


def versions_table(model: str, registered: str, versions: list[VersionInfo]) -> None:
    """A registered model's versions, newest first: aliases, segments, where they came from."""
    table = Table(title=f"versions of {model} ({registered})", title_justify="left")
    for col in ("version", "aliases", "kind", "segments", "created", "by", "from"):
        table.add_column(col, overflow="fold")
    for v in versions:
        kind = v.tags.get("manymodels.kind", "?")
        if kind == "composite":
            source = v.tags.get("manymodels.challenger_run", "?")[:8]
            promoted, kept = v.tags.get("manymodels.promoted", "?"), v.tags.get("manymodels.kept", "?")
            origin = f"{promoted} from run {source}, {kept} kept"
        else:
            origin = f"run {v.run_id[:8]}"
        if v.tags.get("manymodels.complete") == "false" and not v.aliases:
            kind += " (incomplete: its promotion died; the next promote removes it)"
        table.add_row(
            str(v.version),
            ", ".join(v.aliases) or "–",
            kind,
            f"{v.segments:,}",
            when_text(v.created),
            v.tags.get("manymodels.registered_by", "–"),
            origin,
        )
    out.print(table)
