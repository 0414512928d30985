"""The `tally` command: thin click commands over the Python API.

Errors are mapped to exit codes in one place (`main`): 0 ok, 1 data or validation error, 2 usage error. The
inspecting commands take `--json`: they gather their data once (`tally.reports`) and render it as text or as one
JSON document on stdout; under `--json`, `main` also reports an error as a JSON object (docs/cli.md, "Scripting").
"""

from __future__ import annotations

import datetime as dt
import sys

import click

from tally import reports
from tally.errors import DataError, SpecChangedError, TallyError, UsageError


class Output:
    """Where a command's result goes: its text lines at once, or (with --json) one JSON document.

    Under `main` the document waits until the command ends, so that `main` prints exactly one document: the result,
    or the result so far with an "error" key. A caller that invokes the click group itself (a test, an embedding)
    gets the document printed when the command emits it, and the exception as it is."""

    def __init__(self, deferred: bool = False):
        self.json = False
        self.deferred = deferred
        self.document = None

    def emit(self, data, text, as_json=None) -> None:
        """Show `data`: `text(data)` gives the lines, `as_json(data)` (default: `data` itself) the JSON document."""
        if not self.json:
            for line in text(data):
                click.echo(line)
            return
        self.document = as_json(data) if as_json else data
        if not self.deferred:
            click.echo(reports.to_json(self.document))


class Context:
    """What every command shares: the project's `tl.FeatureStore` (configuration, repository, one Spark session,
    online store) and the output."""

    def __init__(self, output: Output | None = None, **flags):
        from tally.feature_store import FeatureStore

        self.output = output or Output()
        self.store = FeatureStore(**flags)
        self.config = self.store.config

    @property
    def repo(self):
        return self.store.repo

    @property
    def spark(self):
        return self.store.spark

    def close(self) -> None:
        self.store.close()


pass_ctx = click.make_pass_decorator(Context)


def _json_flag(f):
    """`--json` on a command: its result as one JSON document on stdout instead of text."""

    def turn_on(ctx, _param, value):
        if value and not ctx.resilient_parsing:  # shell completion parses without running the group
            ctx.find_object(Context).output.json = True

    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=turn_on,
                        help="Print one JSON document instead of text (keys: docs/cli.md, Scripting).")(f)


def _version(ctx, _param, value) -> None:
    if not value or ctx.resilient_parsing:
        return
    for line in reports.versions_text(reports.versions()):  # read from files: no JVM starts
        click.echo(line)
    ctx.exit()


def _date(_ctx, param, value):
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date (YYYY-MM-DD)", param=param) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Print the versions of tally, its spec and its JAR, and exit.")
@click.option("--warehouse", help="Warehouse root (default ./warehouse; env TALLY_WAREHOUSE).")
@click.option("--repo", help="Feature repository folder (default ./features; env TALLY_REPO).")
@click.option("--master", help="Spark master (default local[*]; env TALLY_MASTER).")
@click.option("--data", help="Data root that relative source paths live under (default ./data; env TALLY_DATA).")
@click.option("--online-store", "online_store",
              help="Online store URL (default sqlite:<warehouse>/online/tally.db; env TALLY_ONLINE_STORE).")
@click.pass_context
def cli(ctx, warehouse, repo, master, data, online_store) -> None:
    """tally: payments features on Spark, stored in Delta, joined point-in-time.

    \b
    Examples:
      tally plan
      tally backfill card_velocity --start 2026-01-01 --end 2026-03-31
      tally training-set --spine spine.parquet --timestamp created --features card_velocity --out train
      tally materialize card_velocity && tally serve
    """
    output = ctx.obj if isinstance(ctx.obj, Output) else None  # `main` passes the one it prints from
    ctx.obj = Context(output, warehouse=warehouse, repo=repo, master=master, data=data, online_store=online_store)
    ctx.call_on_close(ctx.obj.close)


@cli.command("config")
@_json_flag
@pass_ctx
def config_cmd(c: Context) -> None:
    """Print the resolved configuration and where each value came from.

    \b
    Examples:
      TALLY_WAREHOUSE=/data/wh tally config
      tally config --json
    """
    c.output.emit(reports.config_report(c.config), reports.config_text)


@cli.command("list")
@_json_flag
@pass_ctx
def list_cmd(c: Context) -> None:
    """List the feature views of the repository.

    \b
    Examples:
      tally --repo features list
      tally list --json | jq -r '.views[].view'
    """
    c.output.emit(reports.list_report(c.repo), reports.list_text)


@cli.command()
@click.argument("view")
@_json_flag
@pass_ctx
def describe(c: Context, view: str) -> None:
    """Show a view: features, windows, semantics, versions, table path, backfilled range.

    \b
    Examples:
      tally describe card_velocity
      tally describe card_velocity --json
    """
    c.output.emit(c.store.describe(view),
                  reports.describe_text)


@cli.command()
@_json_flag
@pass_ctx
def plan(c: Context) -> None:
    """Compare the repository with the warehouse: new views, new versions, unchanged, changed specs; feature sets,
    derived features and labels against the training sets that used them.

    Reads each source's schema (not its rows) and reports missing or mistyped columns. Exits 1 when a definition
    changed under a version that was already backfilled (or used by a training set), or a view's columns do not
    fit its source.

    \b
    Examples:
      tally plan
      tally plan --json
    """
    from tally import registry

    items, references = c.store.plan(), c.store.plan_references()
    # before refusing: the plan says which view (or feature set, derived feature, label) and why
    c.output.emit((items, references), reports.plan_text, reports.plan_report)
    for item in items:
        registry.require_unchanged(item)
    for ref in references:
        if not ref.ok:
            raise SpecChangedError(f"{ref.kind} '{ref.name}' v{ref.version} changed since a training set used it "
                                   f"(fingerprint {ref.stored_fingerprint}, now {ref.fingerprint})",
                                   hint=f"bump version= of '{ref.name}' to {ref.version + 1}")
    broken = [item for item in items if item.problems]
    if broken:
        raise DataError(f"{len(broken)} view(s) cannot be computed from their sources: "
                        f"{', '.join(item.view for item in broken)}", hint="see the '!' lines above")


@cli.command()
@click.argument("views", nargs=-1, required=True)
@click.option("--start", required=True, callback=_date, help="First day (YYYY-MM-DD).")
@click.option("--end", required=True, callback=_date, help="Last day, inclusive (YYYY-MM-DD).")
@click.option("--step-days", default=7, show_default=True, type=click.IntRange(min=1), help="Days per commit.")
@click.option("--resume", is_flag=True, help="Skip chunks already committed with the same fingerprint.")
@click.option("--dry-run", is_flag=True, help="Print the chunks and source ranges; compute nothing.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--stats/--no-stats", "statistics", default=True, show_default=True,
              help="Record per-day feature statistics in each commit (`tally stats`); --no-stats skips that pass.")
@pass_ctx
def backfill(c: Context, views, start, end, step_days, resume, dry_run, quiet, statistics) -> None:
    """Backfill daily snapshots of VIEWS for days START..END, one Delta commit per chunk.

    \b
    Examples:
      tally backfill card_velocity --start 2026-01-01 --end 2026-03-31 --step-days 7
      tally backfill card_velocity merchant_risk --start 2026-01-01 --end 2026-01-31 --resume
      tally backfill card_velocity --start 2026-01-01 --end 2026-01-31 --dry-run
    """
    from tally import registry, store

    targets = [c.repo.view(name) for name in views]
    for v in targets:
        registry.require_unchanged(registry.plan_view(v, store.stored_versions(c.spark, c.config.warehouse, v.name)))
    for v in targets:
        plan_chunks = store.chunks(start, end, step_days)
        if dry_run:
            click.echo(f"{v.name} v{v.version} -> {store.table_path(c.config.warehouse, v.name, v.version)}")
            if getattr(v, "kind", None) == "embedding":  # one retrain per cadence step (tally.embeddings)
                from tally import embeddings

                for g, first, last in embeddings.retrain_days(v, start, end):
                    click.echo(f"  retrain {g} (days {first}..{last}): {v.method} on {v.source.name} "
                               f"{v.source.timestamp} in the {v.lookback} before {g + dt.timedelta(days=1)} 00:00 UTC")
                continue
            for chunk in plan_chunks:
                lo, hi = store.source_range(v, chunk)
                since = f"{lo:%Y-%m-%d %H:%M:%S}" if lo else "beginning"
                click.echo(f"  chunk {chunk}: reads {v.source.name} {v.source.timestamp} in "
                           f"[{since}, {hi:%Y-%m-%d %H:%M:%S}] UTC")
            continue
        # A chunk's line as soon as it is committed, so an interrupted run shows what it kept; the bar only when the
        # lines go elsewhere (stdout redirected) and someone watches stderr.
        show = not quiet and sys.stderr.isatty() and not sys.stdout.isatty()
        with click.progressbar(length=len(plan_chunks), label=f"{v.name} v{v.version}", file=sys.stderr,
                               hidden=not show) as bar:
            def committed(r: dict, v=v, bar=bar) -> None:
                bar.update(1)
                if not quiet:
                    click.echo(_chunk_line(v, r))

            c.store.backfill([v.name], start, end, step_days=step_days, resume=resume, on_chunk=committed,
                             statistics=statistics)


def _chunk_line(v, r: dict) -> str:
    """`tally backfill`'s line for one chunk result (`store.backfill`)."""
    extra = f" {r['rows']} rows, Delta version {r['delta_version']}" if r["status"] == "written" else ""
    if r.get("retrain_ds"):  # an embedding view's retrain (tally.embeddings)
        residual = "first snapshot, not aligned" if r["residual"] is None else f"{r['residual']:.4f}"
        extra += (f"; retrained on {r['events']} events before {r['retrain_ds']} + 1 day, {r['entities']} "
                  f"vectors in {r['train_seconds']:.1f} s, alignment residual {residual}")
    return f"{v.name} v{v.version} {r['chunk']}: {r['status']}{extra}"


@cli.command()
@click.argument("view")
@click.option("--version", "version", type=int, help="View version (default: the repository's).")
@_json_flag
@pass_ctx
def history(c: Context, view: str, version: int | None) -> None:
    """List the Delta versions of a view's table with tally's commit metadata.

    \b
    Examples:
      tally history card_velocity
      tally history card_velocity --version 1 --json
    """
    v = c.repo.view(view)
    c.output.emit(reports.history_report(c.spark, v, version, warehouse=c.config.warehouse), reports.history_text)


@cli.command()
@click.argument("view")
@click.option("--version", "version", type=int, help="View version (default: the repository's).")
@click.option("--feature", "features", multiple=True, help="Only this feature (repeatable; default: all).")
@click.option("--start", callback=_date, help="First day shown (YYYY-MM-DD; drift is judged on the week before too).")
@click.option("--end", callback=_date, help="Last day shown, inclusive (YYYY-MM-DD).")
@click.option("--plot", help="Plot this feature's mean, p01..p99 band and null share over time ...")
@click.option("--out", help="... to this PNG file.")
@_json_flag
@pass_ctx
def stats(c: Context, view: str, version, features, start, end, plot, out) -> None:
    """Per-day feature statistics recorded by backfills, with drifting days flagged.

    Each backfill commit records, per day and feature, the null share and (numeric features) NaN share, mean,
    min, max, p01, p50 and p99. A day is flagged when its mean, null share or NaN share leaves the band around
    the median of the 7 days before it (docs/cli.md, "tally stats").

    \b
    Examples:
      tally stats card_daily
      tally stats card_daily --feature count_7d --start 2026-01-10 --json
      tally stats card_daily --plot count_7d --out count_7d.png
    """
    c.output.emit(c.store.stats(view, version=version, features=features, start=start, end=end, plot=plot, out=out),
                  reports.stats_text)


@cli.command("training-set")
@click.option("--spine", help="Spine data path (one row per example).")
@click.option("--spine-format", default=None, type=click.Choice(["parquet", "delta", "csv", "json", "orc"]),
              help="The spine's format (default: delta for a Delta table, else the file extension, else parquet).")
@click.option("--timestamp", help="The spine's event-time column.")
@click.option("--features", multiple=True,
              help="Comma-separated views or view:feature references; repeatable (the lists are merged).")
@click.option("--out", required=True, help="Output path; the manifest is written beside it.")
@click.option("--format", "out_format", default=None, type=click.Choice(["parquet", "delta"]),
              help="Output format (default parquet, or the manifest's).")
@click.option("--as-of", "as_of", multiple=True, help="VIEW=DELTA_VERSION (or VIEW=TIMESTAMP) for snapshot views.")
@click.option("--allow-missing", is_flag=True, help="Fill nulls for days a snapshot table lacks, and report them.")
@click.option("--label", "label_names", multiple=True,
              help="Comma-separated labels of the repository to join (as known at --labels-as-of); repeatable.")
@click.option("--labels-as-of", "labels_as_of", help="The labels' cutoff: an ISO instant or a day (default: now).")
@click.option("--from-manifest", "from_manifest", help="Rebuild the identical rows recorded in this manifest.")
@_json_flag
@pass_ctx
def training_set_cmd(c: Context, spine, spine_format, timestamp, features, out, out_format, as_of, allow_missing,
                     label_names, labels_as_of, from_manifest) -> None:
    """Build a point-in-time-correct training set and write it with a manifest.

    \b
    Examples:
      tally training-set --spine spine.parquet --timestamp created \\
          --features card_velocity,merchant_risk:dispute_rate_30d --out train --format delta \\
          --label is_fraud --labels-as-of 2026-04-01
      tally training-set --from-manifest train.manifest.json --out train_rebuilt --json
    """
    if not from_manifest:
        missing = [name for name, value in (("--spine", spine), ("--timestamp", timestamp), ("--features", features))
                   if not value]
        if missing:
            raise UsageError(f"training-set needs {', '.join(missing)} (or --from-manifest)")
    pins = {}
    for item in as_of:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--as-of {item!r}: write VIEW=VERSION")
        pins[name] = int(value) if value.isdigit() else value
    refs = [r.strip() for item in features for r in item.split(",") if r.strip()]
    label_refs = [r.strip() for item in label_names for r in item.split(",") if r.strip()]
    c.output.emit(c.store.write_training_set(out, spine=spine, spine_format=spine_format, timestamp=timestamp,
                                             features=refs, out_format=out_format, as_of=pins,
                                             allow_missing=allow_missing, labels=label_refs, labels_as_of=labels_as_of,
                                             from_manifest=from_manifest),
                  reports.training_text)


@cli.command()
@click.option("--source", "source_names", multiple=True, help="Validate this source (repeatable).")
@click.option("--view", "view_names", multiple=True, help="Validate the source of this view (repeatable).")
@pass_ctx
def validate(c: Context, source_names, view_names) -> None:
    """Check sources against their contracts: each check with its failing-row count and a few examples.

    Contracts: entity keys and timestamps non-null, timestamps within the source's bounds, declared column types
    (Source(schema=...)), declared checks (Source(checks=[tl.Check.ge("amount", 0), ...])), unique ids. Exits 1
    when any check fails.

    \b
    Examples:
      tally validate
      tally validate --source charges
      tally validate --view card_velocity
    """
    from tally import registry, sources, validation

    repo = c.repo
    chosen = set(source_names) | {repo.view(v).source.name for v in view_names}
    unknown = chosen - set(repo.sources)
    if unknown:
        raise UsageError(f"unknown source(s) {sorted(unknown)}", hint=f"known sources: {', '.join(sorted(repo.sources))}")
    failed = []
    for name in sorted(chosen or repo.sources):
        source = repo.sources[name]
        users = [v for v in repo.views.values() if v.source.name == name]
        df = sources.read(c.spark, source, data=c.config.data)
        for v in users:
            registry.check_columns(v, df.schema)
        report = validation.source_report(df, source, users)
        click.echo(report.render())
        if not report.ok:
            failed.append(name)
    if failed:
        from tally.errors import DataError

        raise DataError(f"{len(failed)} source(s) fail their contracts: {', '.join(failed)}")


@cli.command()
@click.argument("entity")
@click.argument("entity_id")
@click.option("--view", "view_name", help="The embedding view (default: the one embedding ENTITY, if only one does).")
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1), help="How many neighbours.")
@click.option("--at", required=True, callback=_date, help="Day (YYYY-MM-DD): the vectors a spine row that day reads.")
@_json_flag
@pass_ctx
def similar(c: Context, entity, entity_id, view_name, k, at) -> None:
    """The K nearest neighbours of ENTITY_ID by cosine in an embedding view's vectors at a day.

    \b
    Examples:
      tally similar merchant mer_0a1b2c3d4e --view merchant_by_card --k 10 --at 2026-02-01
      tally similar merchant mer_0a1b2c3d4e --at 2026-02-01 --json
    """
    from tally import embeddings

    views = [v for v in c.repo.views.values() if embeddings.is_embedding(v) and v.entity.name == entity]
    if view_name:
        view = c.repo.view(view_name)
        if not embeddings.is_embedding(view):
            raise UsageError(f"view '{view_name}' is not an embedding view", hint="name a tl.EmbeddingView")
        if view.entity.name != entity:
            raise UsageError(f"embedding view '{view_name}' embeds {view.entity.name}, not {entity}")
    elif len(views) == 1:
        view = views[0]
    else:
        raise UsageError(f"{'no' if not views else len(views)} embedding views embed '{entity}'"
                         + (f": {', '.join(sorted(v.name for v in views))}" if views else ""),
                         hint="pass --view NAME" if views else "check the entity's name (tally list)")
    found = embeddings.similar(c.spark, view, entity_id, at=at, k=k, warehouse=c.config.warehouse)
    report = {"view": view.name, "version": view.version, "entity": entity, "id": entity_id, "at": str(at),
              "neighbours": [{"id": key, "cosine": round(cos, 6)} for key, cos in found]}
    c.output.emit(report, lambda r: [f"{r['view']} v{r['version']}: nearest {r['entity']}s to {r['id']} at {r['at']}",
                                     *[f"  {n['cosine']:+.4f}  {n['id']}" for n in r["neighbours"]]])


@cli.command()
@click.option("--charges", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--days", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--start", default="2026-01-01", show_default=True, callback=_date)
@click.option("--out", required=True, help="Folder for charges/, disputes/, refunds/, authorizations/, authorization_truth/.")
@click.option("--format", "fmt", default="parquet", show_default=True, type=click.Choice(["parquet", "delta"]))
@click.option("--structure/--no-structure", default=False, show_default=True,
              help="Plant latent merchant communities and quiet fraud outside them (docs/datagen.md, Latent structure).")
@click.option("--structure-control", is_flag=True,
              help="The control of --structure: the same fraud mix and rates, without the communities.")
@pass_ctx
def datagen(c: Context, charges, days, seed, start, out, fmt, structure, structure_control) -> None:
    """Generate synthetic payments (charges, disputes, refunds, authorization attempts and their ground truth),
    deterministic by seed. authorization_truth is for evaluating retry policies, never a feature source.

    \b
    Example:
      tally datagen --charges 1000000 --days 90 --seed 7 --out data
    """
    from tally import datagen as gen

    if structure and structure_control:
        raise UsageError("tally datagen: --structure and --structure-control exclude each other",
                         hint="--structure plants the communities, --structure-control is its control without them")
    counts = gen.write(c.spark, out, charges=charges, days=days, seed=seed, start=str(start), format=fmt,
                       structure="control" if structure_control else structure)
    for name, n in counts.items():
        click.echo(f"{name}: {n} rows -> {out}/{name}")


@cli.command("retry-eval")
@click.option("--charges", default=50_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--days", default=30, show_default=True, type=click.IntRange(min=3))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--train-days", type=click.IntRange(min=1), help="Days the learner sees (default: the first 2/3).")
@click.option("--min-probability", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="The learned policy retries only when its predicted approval is at least this.")
@click.option("--cap-24h", default=4, show_default=True, type=click.IntRange(min=1), help="Retries per card per 24 h.")
@click.option("--cap-30d", default=15, show_default=True, type=click.IntRange(min=1), help="Retries per card per 30 days.")
@_json_flag
@pass_ctx
def retry_eval(c: Context, charges, days, seed, train_days, min_probability, cap_24h, cap_30d) -> None:
    """Compare retry policies for soft declines on generated data: fixed schedule vs a learned policy.

    Generates authorizations, learns on the first days' retries, and replays the later soft declines against
    the generator's ground truth (docs/retry.md).

    \b
    Example:
      tally retry-eval --charges 50000 --days 30 --json
    """
    from tally import retry

    result = retry.evaluate(c.spark, charges, days, seed, train_days=train_days, min_probability=min_probability,
                            caps=retry.Caps(per_24h=cap_24h, per_30d=cap_30d))
    c.output.emit(result, retry.report)


@cli.command()
@click.option("--charges", default=1_000_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--days", default=90, show_default=True, type=click.IntRange(min=14))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--data", default=None, help="Where the generated data goes (default: the data root, `data` in tally.toml).")
@pass_ctx
def demo(c: Context, charges, days, seed, data) -> None:
    """Run the end-to-end demo: generate payments, plan, backfill, build a training set, train, compare AUC-PR.

    \b
    Examples:
      tally demo
      tally --warehouse /tmp/wh demo --charges 200000 --days 30
    """
    from tally import demo as demo_module

    demo_module.run(warehouse=c.config.warehouse, echo=click.echo, data=data or c.config.data, charges=charges,
                    days=days, seed=seed, repo=c.config.repo)


@cli.group("task")
def task_group() -> None:
    """Reusable ML tasks: spine, label, features, split, model, metrics (docs/tasks.md).

    \b
    Examples:
      tally task list
      tally task run fraud --labels-as-of 2026-06-01
    """


@task_group.command("list")
@_json_flag
@pass_ctx
def task_list(c: Context) -> None:
    """List the tasks of the repository.

    \b
    Examples:
      tally task list
      tally task list --json
    """
    c.output.emit(reports.task_list_report(c.repo), reports.task_list_text)


@task_group.command("run")
@click.argument("name")
@click.option("--out", help="Run folder (default <warehouse>/tasks/NAME/v<version>/<labels cutoff>).")
@click.option("--labels-as-of", "labels_as_of", help="The labels' cutoff: an ISO instant or a day (default: now).")
@_json_flag
@pass_ctx
def task_run(c: Context, name: str, out, labels_as_of) -> None:
    """Run task NAME: build its training set (with a manifest), train on the earlier period, evaluate on the later
    one, write metrics.json, report.md with its plots, and the model.

    \b
    Examples:
      tally task run fraud
      tally task run fraud --labels-as-of 2026-06-01 --json
    """
    c.output.emit(c.store.run_task(name, out=out, labels_as_of=labels_as_of), reports.task_run_text)


def _online_store(f):
    """`--online-store URL` on the commands that use the store (it may also come before the command)."""
    return click.option("--online-store", "online_store", default=None,
                        help="Online store URL (default: the configured one, see `tally config`).")(f)


@cli.command()
@click.argument("views", nargs=-1, required=True)
@click.option("--start", callback=_date, help="Load what requests from this day on (YYYY-MM-DD, 00:00 UTC) need.")
@_online_store
@pass_ctx
def materialize(c: Context, views, start, online_store) -> None:
    """Build the tiles of online VIEWS from their sources and load them into the online store.

    By default it loads what requests at each source's newest event time need (the longest window or ttl before
    it); --start DAY loads what requests from DAY on need (backtests, parity checks). Rerunning is idempotent.

    \b
    Examples:
      tally materialize card_velocity merchant_risk
      tally materialize card_velocity --start 2026-01-01 --online-store redis://127.0.0.1:6379
    """
    from tally import kernels, online, utc

    targets = [c.repo.view(name) for name in views]
    results = c.store.materialize(views, start=start, store=online_store)
    for view, r in zip(targets, results):
        mark = reports.instant(utc.from_micros(r["watermark_us"])) if r["watermark_us"] is not None else "none (no events)"
        since = "the first event" if r["from_us"] == kernels.MIN_US else reports.instant(utc.from_micros(r["from_us"]))
        if r["from_us"] != kernels.MIN_US and any(f.window.length_us is None for f in view.features):
            since += " (before it, 30-day tiles for the lifetime windows)"
        click.echo(f"{r['view']} v{r['version']}: {r['events']} events, {r['keys']} keys, {r['tiles']} tiles "
                   f"({r['applied']} applied) from {since}; watermark {mark}")
    if results:
        click.echo(f"  store {results[0]['store']}; serving specs in {online.views_dir(c.config.warehouse)}")


@cli.command()
@click.argument("views", nargs=-1, required=True)
@click.option("--trigger", default="1s", show_default=True, help="Micro-batch interval (a duration: 500ms, 1s, 1m).")
@click.option("--until-idle", is_flag=True, help="Fold every commit there is now, then stop.")
@click.option("--max-batches", type=click.IntRange(min=1), default=None, help="Stop after N micro-batches per view.")
@click.option("--files-per-batch", type=click.IntRange(min=1), default=None,
              help="At most N source files per micro-batch (Delta's maxFilesPerTrigger).")
@_online_store
@pass_ctx
def stream(c: Context, views, trigger, until_idle, max_batches, files_per_batch, online_store) -> None:
    """Stream the Delta sources of online VIEWS into the online store, exactly once, until Ctrl-C or SIGTERM.

    The first start of a view version materializes its source as of the latest commit, then folds each later
    commit's events into the tiles, one micro-batch at a time; a restart resumes from the checkpoint under
    <warehouse>/checkpoints/. One line per batch: events, tiles written, late events (older than the store's horizon,
    left to the next `tally materialize`), lag of the newest event behind the wall clock (docs/streaming.md).

    \b
    Examples:
      tally stream card_velocity
      tally stream card_velocity --until-idle --online-store redis://127.0.0.1:6379
    """
    from tally import utc

    def line(r: dict) -> None:
        if r["skipped"]:
            click.echo(f"{r['view']} v{r['version']} batch {r['batch_id']}: already written, skipped")
            return
        newest = reports.instant(utc.from_micros(r["newest_us"])) if r["newest_us"] is not None else "-"
        lag = f"{r['lag_s']:.1f} s" if r["lag_s"] is not None else "-"
        click.echo(f"{r['view']} v{r['version']} batch {r['batch_id']}: {r['events']} events, {r['applied']} tiles "
                   f"written, {r['late']} late; newest event {newest}, lag {lag}")

    import signal

    got: list[str] = []

    def terminate(signum, frame) -> None:  # SIGTERM (a service manager's stop) stops as Ctrl-C does
        got.append("SIGTERM")
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        c.store.stream(views, store=online_store, trigger=trigger, until_idle=until_idle, max_batches=max_batches,
                       files_per_batch=files_per_batch, on_batch=line)
    except KeyboardInterrupt:
        click.echo(f"stream stopped ({got[0] if got else 'Ctrl-C'}); the next start resumes from the checkpoint")
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(min=1), help="Request threads.")
@_online_store
@pass_ctx
def serve(c: Context, host, port, threads, online_store) -> None:
    """Serve the materialized online views over HTTP JSON until stopped (Ctrl-C or SIGTERM).

    GET /health lists the views and their watermarks; POST /features answers lookups (docs/serving.md).

    \b
    Examples:
      tally serve
      tally serve --port 9000 --online-store redis://127.0.0.1:6379
    """
    from tally import online

    online.serve(warehouse=c.config.warehouse, store=online_store or c.config.online_store, host=host, port=port,
                 threads=threads, echo=click.echo)


def _keys(_ctx, param, values) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"'{item}' is not COLUMN=VALUE", param=param)
        out[name] = value
    return out


@cli.group("driver")
def driver_group() -> None:
    """A long-lived driver: one warm Spark session that runs this project's commands (docs/cli.md, "The driver").

    \b
    A fresh `tally` process pays several seconds before its first result (the JVM, the session, the first plans).
    While a driver runs for the project's warehouse, every command but stream, serve and demo runs in it, with the
    same output and exit code; a command whose settings or build differ from the driver's runs in its own process.

    \b
    Examples:
      tally driver start && tally training-set --spine spine.parquet --timestamp created --features card_velocity --out t
      tally driver status
      tally driver stop
    """


def _group_flags(ctx) -> list[str]:
    """The group's flags as given (--warehouse, --master, ...), for the driver process to resolve the same project."""
    params = ctx.find_root().params
    return [arg for name, value in params.items() if value is not None
            for arg in (f"--{name.replace('_', '-')}", value)]


def _idle_timeout(f):
    from tally.driver import IDLE_TIMEOUT

    return click.option("--idle-timeout", "idle_timeout", default=IDLE_TIMEOUT, show_default=True,
                        help="Stop after this long without a command (30m, 8h; 0: never).")(f)


@driver_group.command("start")
@click.option("--no-warm-up", "no_warm_up", is_flag=True, help="Serve at once, without the warm-up workload.")
@_idle_timeout
@click.option("--timeout", default=300, show_default=True, type=click.IntRange(min=1),
              help="Seconds to wait for the driver to serve.")
@click.pass_context
def driver_start(ctx, no_warm_up, idle_timeout, timeout) -> None:
    """Start the driver in the background; return when it serves."""
    from tally import driver

    c = ctx.find_object(Context)
    info = driver.start(c.config, _group_flags(ctx), warm_up=not no_warm_up, idle_timeout=idle_timeout,
                        timeout=timeout)
    if info["already"]:
        click.echo(f"a driver already serves {info['warehouse']} (pid {info['pid']}); log {info['log']}")
        return
    click.echo(f"driver serves {info['warehouse']} (pid {info['pid']}, master {info['master']}, warm-up "
               f"{info['warm_up_s']:.1f} s); log {info['log']}; stop it with: tally driver stop")


@driver_group.command("run")
@click.option("--no-warm-up", "no_warm_up", is_flag=True, help="Serve at once, without the warm-up workload.")
@_idle_timeout
@pass_ctx
def driver_run(c: Context, no_warm_up, idle_timeout) -> None:
    """Run the driver in the foreground until Ctrl-C, SIGTERM or `tally driver stop` (what start runs)."""
    from tally import driver

    def announce(info: dict) -> None:
        click.echo(f"driver serves {info['warehouse']} at {info['socket']} (pid {info['pid']}, warm-up "
                   f"{info['warm_up_s']:.1f} s)")
        sys.stdout.flush()  # its log is a file: say it now

    driver.run(c.store, warm_up=not no_warm_up, idle_timeout=idle_timeout, announce=announce)
    click.echo("driver stopped")


@driver_group.command("status")
@_json_flag
@pass_ctx
def driver_status(c: Context) -> None:
    """Is a driver serving this project, since when, and what is it running? Exit code 3 when none is."""
    from tally import driver

    status = driver.ask(driver.paths(c.config.warehouse), "status")

    def text(s: dict) -> list[str]:
        if not s["running"]:
            return [f"no driver serves {c.config.warehouse}"]
        busy = f"running: tally {' '.join(s['busy'])}" if s["busy"] else "idle"
        if s["idle_timeout_s"]:
            busy += f" (stops after {s['idle_timeout_s'] / 3600:g} h without a command)"
        compiled = f", {s['compiled_classes']} classes of generated code compiled" if "compiled_classes" in s else ""
        return [f"driver pid {s['pid']} serves {s['warehouse']} (master {s['master']}), up {s['uptime_s']:.0f} s, "
                f"{s['commands']} commands{compiled}; {busy}; log {s['log']}"]

    c.output.emit({"running": status is not None, **(status or {})}, text)
    if status is None:
        raise click.exceptions.Exit(3)


@driver_group.command("stop")
@pass_ctx
def driver_stop(c: Context) -> None:
    """Stop the driver once its running command ends."""
    from tally import driver

    stopped = driver.stop(c.config)
    click.echo(f"no driver serves {c.config.warehouse}" if stopped is None else f"driver pid {stopped['pid']} stopped")


@cli.command("online-get")
@click.argument("features", nargs=-1, required=True)
@click.option("--key", "keys", multiple=True, required=True, callback=_keys, help="An entity key: COLUMN=VALUE (repeatable).")
@click.option("--at", help="Request time, ISO with an offset (2026-03-01T12:00:00Z); default now.")
@click.option("--url", help="Ask this server (http://127.0.0.1:8765) instead of fetching in-process.")
@_online_store
@pass_ctx
def online_get(c: Context, features, keys, at, url, online_store) -> None:
    """Look up online FEATURES ("view" or "view:feature") for one entity, for debugging.

    In-process by default (reads the store directly); through a running `tally serve` with --url.

    \b
    Examples:
      tally online-get card_velocity --key card_id=c_1 --at 2026-03-01T12:00:00Z
      tally online-get card_velocity:count_24h merchant_risk --key card_id=c_1 --key merchant_id=m_9 \\
          --url http://127.0.0.1:8765
    """
    from tally import online

    entities = online.typed_keys(c.config.warehouse, features, keys)
    if url:
        result = online.OnlineClient(url).get(list(features), entities, at=at)
    else:
        result = c.store.get_online_features(list(features), entities, at=at, store=online_store)
    click.echo(f"at {reports.instant(result.at)}" if result.at else "at now")
    width = max(len(ref) for ref in result)
    for ref, value in result.items():
        click.echo(f"  {ref:{width}}  {online.show(value):24}  {result.types[ref]}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: the command runs in this project's long-lived driver when one serves it (`tally.driver`), else
    here (`run`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    from tally import driver

    code = driver.forward(args)
    return run(args) if code is None else code


def run(args: list[str]) -> int:
    """Runs the click group in this process and maps errors to exit codes (0 ok, 1 data, 2 usage).

    Under --json it prints the one JSON document stdout gets: the command's result, or on an error the result so
    far (`plan` keeps its views) with an "error" object. Messages and tracebacks go to stderr as without --json.
    """
    out = Output(deferred=True)
    error = None
    try:
        result = cli.main(args=args, prog_name="tally", standalone_mode=False, obj=out)
    except TallyError as err:
        click.echo(f"error: {err}", err=True)
        error = {"kind": err.code, "message": err.message, "hint": err.hint, "exit_code": err.exit_code,
                 "details": err.details}
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        error = {"kind": "ABORTED", "message": "aborted", "hint": None, "exit_code": 1, "details": {}}
    except click.ClickException as err:
        err.show()
        error = {"kind": "USAGE", "message": err.format_message(), "hint": None, "exit_code": 2, "details": {}}
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except Exception as exc:  # a bug: the traceback still goes to stderr and Python exits 1, as without --json
        if _wants_json(out, args):
            click.echo(reports.to_json({**(out.document or {}), "error": {
                "kind": "INTERNAL", "message": f"{type(exc).__name__}: {exc}", "hint": "please report this tally bug",
                "exit_code": 1, "details": {}}}, lenient=True))
        raise
    if error is None:
        if out.document is not None:
            click.echo(reports.to_json(out.document))
        return result if isinstance(result, int) else 0  # an exit code of a command's own (`driver status`: 3)
    if _wants_json(out, args):
        click.echo(reports.to_json({**(out.document or {}), "error": error}, lenient=True))
    return error["exit_code"]


def _wants_json(out: Output, args: list[str]) -> bool:
    """--json was turned on, or given to a command line that failed before its flag was read (a usage error)."""
    options = args[: args.index("--")] if "--" in args else args
    return out.json or "--json" in options


if __name__ == "__main__":
    sys.exit(main())
