"""The report: <report-dir>/report.md and a self-contained report.html (images as base64 data URIs), one
section per dataset, plus tables/*.{md,csv,tex} and figures/*.png.

Reads only the results store and the run directories; never trains. Deterministic: the same store and
run directories give byte-identical files (no timestamps; all orders come from the registries). Grids and
plots are cached in <report-dir>/.figure-cache.json, keyed by checkpoint mtimes and the plotted data, so a
regeneration without new results only rewrites text.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.config import ConfigError, DataConfig, section_from_dict
from bench.core.console import fit
from bench.core.data import DATASETS, DatasetError, check_run_data, load_dataset
from bench.core.paths import path_under, safe_name
from bench.core.protocols import PROTOCOLS
from bench.core.registry import UnknownNameError
from bench.core.tempfiles import remove_orphans, replace_text
from methods import METHODS

from . import grids as G
from . import plots as P
from .claims import Claim, ClaimReport, check_all, describe, registered
from .results import DONE, Results, Run, load_results
from .tables import (
    Table,
    build_tables,
    frame_markdown,
    markdown_escape,
    timing_frame,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)

CACHE_FILE = ".figure-cache.json"


# --- the document: a few block types, rendered to Markdown and to HTML ----------------------------------
@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    text: str
    small: bool = False


@dataclass
class Bullets:
    #: plain text, or (text, href) for a link, or (prefix, text, href)
    items: list[Any]


@dataclass
class TableBlock:
    table: Table
    files: dict[str, str]


@dataclass
class FrameBlock:
    """A small table of text cells (not a results table: no best marks, no provenance)."""

    frame: Any  # pandas.DataFrame
    files: dict[str, str]


@dataclass
class Notes:
    """Lines shown on demand: a collapsed <details> block in HTML, a list of small lines in Markdown."""

    summary: str
    lines: list[str]


@dataclass
class Figure:
    path: Path
    rel: str
    title: str
    caption: str


@dataclass
class Document:
    title: str
    blocks: list[Any] = field(default_factory=list)

    def add(self, *blocks: Any) -> None:
        self.blocks += blocks


def _md_link(text: str, href: str) -> str:
    # variant names may hold brackets ("faae[loss.rec_weight=30]"); spaces and parentheses would end the URL
    text = markdown_escape(text).replace("[", r"\[").replace("]", r"\]")
    return f"[{text}](<{markdown_escape(href)}>)"


def _md_item(item: Any) -> str:
    if isinstance(item, tuple) and len(item) == 2:
        return _md_link(item[0], item[1])
    if isinstance(item, tuple):
        return f"{markdown_escape(item[0])}{_md_link(item[1], item[2])}"
    return markdown_escape(str(item))


def to_markdown_doc(doc: Document) -> str:
    """Markdown renderers pass HTML through, so every text (names and messages come from the store) is escaped."""
    esc = markdown_escape
    out = [f"# {esc(doc.title)}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += [f"{'#' * b.level} {esc(b.text)}", ""]
        elif isinstance(b, Para):
            out += [f"<sub>{esc(b.text)}</sub>" if b.small else esc(b.text), ""]
        elif isinstance(b, Bullets):
            out += [f"- {_md_item(i)}" for i in b.items] + [""]
        elif isinstance(b, (TableBlock, FrameBlock)):
            text = to_markdown(b.table) if isinstance(b, TableBlock) else \
                frame_markdown(b.frame.map(markdown_escape).rename(columns=markdown_escape))
            out += [text, "", "<sub>Files: " + ", ".join(f"[{k}]({v})" for k, v in b.files.items()) + "</sub>", ""]
        elif isinstance(b, Notes):
            out += [f"**{esc(b.summary)}**", ""] + [f"<sub>{esc(n)}</sub>  " for n in b.lines] + [""]
        elif isinstance(b, Figure):
            out += [f"![{esc(b.title)}]({b.rel})", "", f"*{esc(b.title)}.* {esc(b.caption)}", ""]
    return "\n".join(out).rstrip() + "\n"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; }
.scroll { overflow-x: auto; }
table.results { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
table.results th, table.results td { padding: 0.25em 0.8em; text-align: right; white-space: nowrap; }
table.results th { white-space: normal; vertical-align: bottom; }
table.results th:first-child, table.results td:first-child { text-align: left; }
table.results thead { border-top: 2px solid #222; border-bottom: 1px solid #222; }
table.results tbody { border-bottom: 2px solid #222; }
.small { font-size: 0.85em; color: #444; margin: 0.2em 0; }
.figrow { display: flex; flex-wrap: wrap; column-gap: 2em; align-items: flex-start; }
figure { margin: 1.2em 0; flex: 1 1 420px; max-width: 640px; } figure img { max-width: 100%; image-rendering: pixelated; }
figcaption { font-size: 0.9em; color: #444; }
code { font-size: 0.9em; }
"""


def _html_item(item: Any) -> str:
    if isinstance(item, tuple) and len(item) == 2:
        return f'<a href="{html.escape(item[1])}">{html.escape(item[0])}</a>'
    if isinstance(item, tuple):
        return f'{html.escape(item[0])}<a href="{html.escape(item[2])}">{html.escape(item[1])}</a>'
    return html.escape(str(item))


def to_html_doc(doc: Document) -> str:
    """One page; every image inline as a data URI, so the file opens from disk with nothing else."""
    body = [f"<h1>{html.escape(doc.title)}</h1>"]
    in_row = False  # consecutive figures share a row, side by side where the page is wide enough
    for b in doc.blocks:
        if isinstance(b, Figure) != in_row:
            body.append('<div class="figrow">' if not in_row else "</div>")
            in_row = not in_row
        if isinstance(b, Heading):
            anchor = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            body.append(f"<h{b.level}{anchor}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f'<p class="small">{html.escape(b.text)}</p>' if b.small else f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_html_item(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, (TableBlock, FrameBlock)):
            table = to_html(b.table) if isinstance(b, TableBlock) else \
                b.frame.to_html(index=False, border=0, classes="results")  # text cells: escaped by pandas
            links = ", ".join(f'<a href="{html.escape(v)}">{html.escape(k)}</a>' for k, v in b.files.items())
            body.append(f'<div class="scroll">{table}</div>')
            body.append(f'<p class="small">Files: {links}</p>')
        elif isinstance(b, Notes):  # collapsed by default: the figures follow the numbers closely
            items = "".join(f'<p class="small">{html.escape(n)}</p>' for n in b.lines)
            body.append(f"<details><summary>{html.escape(b.summary)}</summary>{items}</details>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(b.title)}" src="data:image/png;base64,{data}">'
                        f"<figcaption><strong>{html.escape(b.title)}.</strong> {html.escape(b.caption)}"
                        "</figcaption></figure>")
    if in_row:
        body.append("</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# --- figure cache ---------------------------------------------------------------------------------------
class FigureCache:
    """figure file name -> key of what it was rendered from; a figure is redrawn only when its key changes."""

    def __init__(self, report_dir: Path):
        self.path = report_dir / CACHE_FILE
        self.fig_dir = report_dir / "figures"
        try:
            self.old = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.old = {}
        self.new: dict[str, Any] = {}

    def get(self, name: str, key: str) -> Any | None:
        """The stored extra data (e.g. notes) of a fresh figure, else None."""
        entry = self.old.get(name)
        if entry and entry["key"] == key and (self.fig_dir / name).exists():
            self.new[name] = entry
            return entry
        return None

    def put(self, name: str, key: str, **extra: Any) -> None:
        self.new[name] = {"key": key, **extra}

    def save(self) -> None:
        # entries of figures not drawn this time (e.g. a --datasets filter) stay valid
        _write(self.path, json.dumps({**self.old, **self.new}, indent=1, sort_keys=True) + "\n")


# --- sections -------------------------------------------------------------------------------------------
def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _counted(values: list[str]) -> str:
    c = Counter(values)
    return ", ".join(f"{v} ({n} runs)" if len(c) > 1 else v for v, n in sorted(c.items()))


#: config entries that say nothing about what was trained, or that the origin line below states
_NOT_SETTINGS = ("method", "variant", "seed", "dataset", "protocol", "origin", "train.precision")


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """A config's settings as "section.key" -> value, the method's parameters as "method.key"."""
    flat = _flatten({k: v for k, v in config.items() if k not in _NOT_SETTINGS})
    return {("method." + k[len("params."):] if k.startswith("params.") else k): v for k, v in flat.items()
            if k not in _NOT_SETTINGS and not k.startswith("eval.")}


def settings_origin(run: Run) -> str:
    """Where a run's settings come from: its method's own under the protocol (the authors', where the protocol
    applies them, else the protocol's shared ones), a `bench tune` study (origin.study, for the keys origin.keys),
    or overrides (--set, a variant), each named with the value it replaced."""
    try:
        cls = METHODS.get(run.method)
        default = _settings(cls.default_config(run.dataset, run.protocol).to_dict())
        authors = PROTOCOLS.get(run.protocol).authors_settings and bool(cls.authors)
    except (UnknownNameError, ConfigError):
        return "unknown (method or protocol not registered here)"
    origin = run.config.get("origin") or {}
    tuned = {k for k in str(origin.get("keys", "")).split(",") if k}
    own = _settings(run.config)
    changed = {k: v for k, v in own.items() if default.get(k, v) != v and k not in tuned}
    parts = [f"settings tuned by study {origin['study']} (it chose {', '.join(sorted(tuned))})"
             if origin.get("study") else
             "the authors' settings (docs/methods.md)" if authors else f"the {run.protocol} protocol's settings"]
    if changed:
        parts.append("overridden: " + ", ".join(f"{k}={v} (not {default[k]})" for k, v in sorted(changed.items())))
    return "; ".join(parts)


def protocol_blocks(table: Table) -> list[Any]:
    runs = table.runs
    desc = PROTOCOLS.get(table.protocol).description if table.protocol in PROTOCOLS else "(not registered here)"
    flat = [_flatten({k: v for k, v in r.config.items() if k not in ("method", "variant", "seed", "params", "origin")})
            for r in runs]
    shared = {k: v for k, v in flat[0].items() if all(f.get(k) == v for f in flat)}
    text = ", ".join(f"{k}={v}" for k, v in sorted(shared.items()) if k not in ("dataset", "protocol"))
    lines = [f"Shared by all runs: {text}."]
    differing = sorted({k for f in flat for k in f} - set(shared))
    for row in table.rows:
        config = _flatten({k: v for k, v in row.runs[0].config.items() if k != "origin"})
        own = {k: v for k, v in config.items() if k.startswith("params.") or k in differing}
        values = ("; " + ", ".join(f"{k}={v}" for k, v in sorted(own.items()))) if own else ""
        lines.append(f"{row.label}: {settings_origin(row.runs[0])}{values}")
    # the full settings on demand, like the provenance: the tables and figures come first
    return [Para(f"Protocol {table.protocol}: {desc}."),
            Notes("Settings (shared by all runs, then each row's origin and own values)", lines)]


def environment_blocks(runs: list[Run]) -> list[Any]:
    pkgs: dict[str, list[str]] = {}
    for r in runs:
        for p, v in r.packages.items():
            pkgs.setdefault(p, []).append(v)
    items = [f"device: {_counted([r.device for r in runs])}", f"dtype: {_counted([r.dtype for r in runs])}",
             f"code version: {_counted([r.code_version for r in runs])}",
             "packages: " + "; ".join(f"{p} {_counted(v)}" for p, v in sorted(pkgs.items()))]
    return [Heading(4, "Environment"), Bullets(items)]


def run_blocks(runs: list[Run], report_dir: Path) -> list[Any]:
    items = []
    for r in runs:
        msg = f" ({r.message})" if r.message else ""
        prefix = f"{r.label}, seed {r.seed}, {r.status}, {r.steps} steps, {r.train_seconds:.1f} s training{msg}: "
        items.append((prefix, r.run_id, _rel(r.run_dir, report_dir) + "/"))
    return [Heading(4, "Runs"), Bullets(items)]


class DataCache:
    """Held-out images for the grids, loaded once per dataset and data settings, only when a grid is drawn."""

    def __init__(self, data_root: str | None):
        self.data_root = data_root
        self.loaded: dict[str, Any] = {}

    def get(self, run: Run):
        key = json.dumps([run.dataset, run.config.get("data", {})], sort_keys=True)
        if key not in self.loaded:
            cfg = section_from_dict(DataConfig, run.config.get("data", {}), "data")
            self.loaded[key] = load_dataset(run.dataset, self.data_root, cfg)
        return self.loaded[key]


def grid_blocks(table: Table, report_dir: Path, cache: FigureCache, data: DataCache, log,
                damaged: dict[str, str] | None = None) -> list[Any]:
    """The grid figures of a table; `damaged` collects run id -> message of runs with a damaged checkpoint."""
    # one run per row: its lowest seed (rows list their runs in seed order)
    rows = [(row.label, row.runs[0]) for row in table.rows]
    blocks: list[Any] = []
    models: dict[str, Any] = {}
    for kind, chosen, notes in G.plan_grids(rows, table.dataset):
        path = path_under(report_dir / "figures", f"{table.slug}-{kind.name}.png")
        name = path.name
        if not chosen:
            blocks.append(Para(f"{kind.title}: no method provides {', '.join(sorted(kind.requires))}.", True))
            continue
        key = G.grid_key(kind, chosen, chosen[0][1].config.get("data", {}))
        hit = cache.get(name, key)
        if hit is not None and damaged is not None:
            damaged.update(hit.get("damaged", {}))
        if hit is None:
            try:
                images = data.get(chosen[0][1])
                if kind.select is not None:  # held-out images: only those each run was trained beside
                    for _, run in chosen:
                        check_run_data(Path(run.run_dir), images, record=False)
            except DatasetError as e:
                images = None
                if kind.select is None:  # samples need no held-out images, only the nets' data shape
                    with contextlib.suppress(G.GridUnavailable):
                        images = G.shape_only(chosen[0][1])
                if images is None:
                    first = str(e).splitlines()[0]
                    blocks.append(Para(f"{kind.title}: not drawn, the held-out images are unavailable ({first}); "
                                       "pass --data-root.", True))
                    continue
            log(fit(f"report: drawing {name}"))
            found: dict[str, str] = {}
            drawn, draw_notes = G.draw_grid(kind, chosen, images, path, models, found)
            if damaged is not None:
                damaged.update(found)
            if not drawn:
                blocks.append(Para(f"{kind.title}: not drawn: {'; '.join(notes + draw_notes)}.", True))
                continue
            cache.put(name, key, notes=draw_notes, damaged=found)
            hit = {"notes": draw_notes}
        seeds = ", ".join(f"{label} s{run.seed}" for label, run in chosen)
        left_out = notes + hit["notes"]
        caption = f"{kind.caption} Runs: {seeds}."
        if left_out:
            caption += " Left out: " + "; ".join(left_out) + "."
        blocks.append(Figure(path, f"figures/{name}", kind.title, caption))
    return blocks


def plot_blocks(table: Table, results: Results, report_dir: Path, cache: FigureCache, log) -> list[Any]:
    specs = [
        ("losses", "Training losses", P.loss_frame(table.runs), P.plot_losses,
         "Losses per phase over steps, from each run's log.jsonl (mean ± sd over seeds)."),
        ("metrics", "Metric values", P.metric_frame(table, results), P.plot_metrics,
         "Each seed (dark grey) and the mean ± sd over seeds (blue) per method."),
        ("throughput", "Throughput", P.throughput_frame(table, results), P.plot_throughput,
         "Images per second: training (the store's train_images_per_s, else the runner's last logged "
         "images_per_s) and, when stored, encoding and decoding at evaluation. Wall-clock timings depend on the "
         "machine's load."),
    ]
    blocks: list[Any] = []
    for kind, title, df, plot, caption in specs:
        if df.empty:
            blocks.append(Para(f"No data for the {kind} plot.", True))
            continue
        path = path_under(report_dir / "figures", f"{table.slug}-{kind}.png")
        name = path.name
        key = P.frame_key(kind, df)
        if cache.get(name, key) is None:
            log(fit(f"report: plotting {name}"))
            plot(df, path)
            cache.put(name, key)
        blocks.append(Figure(path, f"figures/{name}", title, caption))
    return blocks


def write_tables(table: Table, report_dir: Path) -> dict[str, str]:
    files = {}
    def markdown_with_notes(t: Table) -> str:
        return f"{to_markdown(t)}\n\n" + "\n".join(f"- {markdown_escape(n)}" for n in t.footnotes)

    for ext, fn in (("md", markdown_with_notes), ("csv", to_csv), ("tex", to_latex)):
        path = path_under(report_dir / "tables", f"{table.slug}.{ext}")
        text = fn(table)
        if ext != "csv":
            text = text.rstrip("\n") + "\n"
        _write(path, text)
        files[ext] = f"tables/{path.name}"
    return files


def _write(path: Path, text: str) -> None:
    """Write only when the content changed, so that an unchanged report keeps its files untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return
    replace_text(path, text)  # a temporary name of its own: reports of two processes may overlap


def claim_blocks(table: Table, report: ClaimReport) -> list[Any]:
    checked = report.by_table.get(table.slug)
    if not checked:
        return []
    return [Heading(4, "Claims"), Para(report.rules(), True), Bullets([describe(c) for c in checked])]


def timing_blocks(table: Table, results: Results, report_dir: Path) -> list[Any]:
    frame = timing_frame(table, results.values)
    path = path_under(report_dir / "tables", f"{table.slug}-time.csv")
    _write(path, frame.to_csv(index=False, lineterminator="\n"))
    return [Para("Seconds per run, mean over seeds. Work that metrics share (the held-out "
                 "images' Inception features, the reconstructions) counts in the first metric that needs it; "
                 "features found in the cache cost nothing.", True),
            FrameBlock(frame, {"csv": f"tables/{path.name}"})]


def build_document(results: Results, report_dir: Path, data_root: str | None = None, grids: bool = True,
                   plots: bool = True, log=print, claims: list[Claim] | None = None) -> Document:
    doc = Document("aegan-bench report")
    tables = build_tables(results)
    # one family for the whole report: every claim's key tests are corrected together
    checked = check_all(tables, results.values, [*registered(), *(claims or [])])
    cache = FigureCache(report_dir)
    data = DataCache(data_root)
    damaged: dict[str, str] = {}
    datasets = results.datasets()
    doc.add(Para(f"Results store: {results.store_path.name}; {len(results.runs)} runs "
                 f"({_counted([r.status for r in results.runs]) if results.runs else 'none'}). "
                 "Generated from the store and run directories only."),
            Bullets([(f"Dataset {d}", f"#dataset-{safe_name(d)}") for d in datasets]))
    for ds in datasets:
        desc = DATASETS.get(ds).description if ds in DATASETS else ""
        doc.add(Heading(2, f"Dataset {ds}", f"dataset-{safe_name(ds)}"))
        if desc:
            doc.add(Para(desc))
        for table in [t for t in tables if t.dataset == ds]:
            doc.add(Heading(3, table.title, table.slug))
            description, settings = protocol_blocks(table)
            doc.add(description)
            views = table.views()
            # as in a paper: the main table, what it says of the claims, the first figures (reconstructions and
            # samples, side by side), then the details and the other figures
            figures = [Heading(4, "Figure grids"), *grid_blocks(table, report_dir, cache, data, log, damaged)] \
                if grids else []
            shown = [i for i, b in enumerate(figures) if isinstance(b, Figure)][:2]
            cut = shown[-1] + 1 if shown else len(figures)
            lead, later = figures[:cut], figures[cut:]
            for i, view in enumerate(views):
                if i == 1:
                    doc.add(Heading(4, "Detail tables"))
                if i:
                    doc.add(Para(view.view.replace("-", " ").capitalize(), True))
                doc.add(TableBlock(view, write_tables(view, report_dir)))
                if i == 0:
                    if view.view == "main":
                        doc.add(*claim_blocks(table, checked))
                    doc.add(*lead)
            doc.add(*(later if views else figures))
            doc.add(Notes("Provenance and notes (what every value was computed on)", table.footnotes), settings)
            if plots:
                doc.add(Heading(4, "Plots"), *plot_blocks(table, results, report_dir, cache, log))
            doc.add(Heading(4, "Where the time goes"), *timing_blocks(table, results, report_dir))
            doc.add(*environment_blocks(table.runs))
            doc.add(*run_blocks(table.runs, report_dir))
        others = [r for r in results.runs if r.dataset == ds and r.status != DONE]
        if others:
            doc.add(Heading(3, "Runs not in the tables (not finished)"), *run_blocks(others, report_dir)[1:])
    if damaged:
        # the other runs are in the tables and figures; these cannot be drawn until retrained
        doc.add(Heading(2, "Runs with damaged files", "damaged"), Bullets([f"{k}: {v}" for k, v in sorted(damaged.items())]))
        for k, v in sorted(damaged.items()):
            log(f"report: damaged run {k}: {v}")  # one line naming the file, whatever its width
    if not datasets:
        doc.add(Para("No runs in the store yet: `python -m bench run --methods faae,aae --protocol smoke`."))
    if grids or plots:
        cache.save()
    return doc


def default_report_dir(store_path: str | Path, report_dir: str | Path | None = None) -> Path:
    """`report_dir`, else report/ next to the store."""
    return Path(report_dir) if report_dir else Path(store_path).parent / "report"


def write_report(store_path: str | Path, report_dir: str | Path | None = None, datasets: list[str] | None = None,
                 methods: list[str] | None = None, data_root: str | None = None, grids: bool = True,
                 plots: bool = True, log=print, claims: list[Claim] | None = None) -> Path:
    """Render the report of a results store; returns the path of report.html. `grids` and `plots` off leave
    the figures out (tables and text only); `claims` are checked beside the registered ones."""
    store_path = Path(store_path)
    report_dir = default_report_dir(store_path, report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    # temporaries of report writers that were killed
    remove_orphans(report_dir, report_dir / "figures", report_dir / "tables")
    results = load_results(store_path, datasets, methods)
    doc = build_document(results, report_dir, data_root, grids, plots, log, claims)
    _write(report_dir / "report.md", to_markdown_doc(doc))
    _write(report_dir / "report.html", to_html_doc(doc))
    return report_dir / "report.html"
