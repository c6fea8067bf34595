"""Sphinx extension of the course website: what the book theme and MyST-NB do not do for us.

- ``{course-schedule}``: the schedule table of the front page, one row per lecture found in
  ``lectures/`` (``schedule.yaml`` adds the assignment that follows it and the readings).
- ``{lecture-times}``: how long each lecture took to execute for this site, and how (executed
  in this build or taken from the cache), read from MyST-NB's execution records.
- Static widgets: the ipywidgets controls of a lecture (sliders, drop-downs) drawn as disabled
  HTML controls at the values the figure below them was drawn for. A static site has no kernel,
  and the widget manager MyST-NB would load comes from a CDN.
- The launch banner on lecture and assignment pages: open on the course hub (the book theme's
  nbgitpuller link), download the source notebook, the notebook in the repository.
"""

from __future__ import annotations

import html
import json
import math
import re
from datetime import datetime
from pathlib import Path

import yaml
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOGGER = logging.getLogger(__name__)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
LECTURES, ASSIGNMENTS = "lectures/", "assignments/"


# --------------------------------------------------------------------------- the schedule
def _load_schedule(path: str) -> dict:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data.get("lectures", {}), dict):
        raise ValueError(f"{path}: 'lectures' must map lecture names (NN_topic) to their entries")
    return data


def _cell(text: str) -> list[str]:
    """One cell of a list-table: its lines, indented under the '  - ' bullet."""
    lines = text.strip().splitlines() or [""]
    return [f"  - {lines[0]}"] + [f"    {line}" for line in lines[1:]]


class CourseSchedule(SphinxDirective):
    """The schedule: lecture -> assignment -> readings, one row per lecture in lectures/."""

    def run(self):
        schedule = _load_schedule(self.config.course_schedule)
        self.env.note_dependency(self.config.course_schedule)
        entries = schedule.get("lectures", {})
        docs = sorted(self.env.found_docs)
        lectures = [d for d in docs if d.startswith(LECTURES) and d != LECTURES + "index"]
        assignment_docs = {}
        for doc in docs:
            if doc.startswith(ASSIGNMENTS):
                assignment_docs.setdefault(doc.split("/")[1], []).append(doc)
        for name in sorted(set(entries) - {d[len(LECTURES) :] for d in lectures}):
            LOGGER.warning(
                f"schedule.yaml names a lecture that lectures/ does not have: {name}",
                location=(self.env.docname, self.lineno),
            )

        rows = [
            "```{list-table}",
            ":header-rows: 1",
            ":widths: 4 30 26 40",
            ":class: course-schedule",
            "",
            "* - \\#",
            "  - Lecture",
            "  - Assignment",
            "  - Readings",
        ]
        placed = set()
        for number, doc in enumerate(lectures, start=1):
            entry = entries.get(doc[len(LECTURES) :]) or {}
            names = entry.get("assignment") or []
            names = [names] if isinstance(names, str) else list(names)
            links = []
            for name in names:
                if name in assignment_docs:
                    links += [f"{{doc}}`/{d}`" for d in assignment_docs[name]]
                    placed.add(name)
                else:
                    LOGGER.warning(
                        f"schedule.yaml: assignment {name!r} is not in assignments/",
                        location=(self.env.docname, self.lineno),
                    )
            readings = entry.get("readings") or {}
            reading_lines = [
                f"**{label}:** {readings[key].strip()}"
                for key, label in (("thesis", "Thesis"), ("anthology", "Anthology"), ("papers", "Papers"))
                if readings.get(key)
            ]
            rows += [f"* - {number}"] + _cell(f"{{doc}}`/{doc}`") + _cell("<br>".join(links) or "—")
            rows += _cell("\n\n".join(reading_lines) or "the lecture's references")
        rows.append("```")
        unplaced = [name for name in sorted(assignment_docs) if name not in placed]
        if unplaced:
            rows += [
                "",
                "Also: " + ", ".join(f"{{doc}}`/{d}`" for name in unplaced for d in assignment_docs[name]) + ".",
            ]
        return self.parse_text_to_nodes("\n".join(rows))


# --------------------------------------------------------------------------- run times
class lecture_times(nodes.General, nodes.Element):
    """Placeholder for the run-time table, filled once every lecture has been read."""


class LectureTimes(SphinxDirective):
    def run(self):
        return [lecture_times()]


def _execution_records(env) -> dict:
    from myst_nb.sphinx_ import NbMetadataCollector

    return {
        doc: NbMetadataCollector.get_exec_data(env, doc) for doc in sorted(env.found_docs) if doc.startswith(LECTURES)
    }


def _format_seconds(seconds) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def fill_lecture_times(app: Sphinx, doctree: nodes.document, docname: str):
    placeholders = list(doctree.findall(lecture_times))
    if not placeholders:
        return
    mode = app.config.course_mode
    rows = []
    for doc, record in _execution_records(app.env).items():
        title = app.env.titles.get(doc)
        link = html.escape(app.builder.get_relative_uri(docname, doc))
        name = html.escape(title.astext() if title is not None else doc)
        if not record:
            when, runtime = "not executed for this build", None
        else:
            runtime = record.get("runtime")
            when = datetime.fromtimestamp(record["mtime"]).strftime("%Y-%m-%d %H:%M")
        rows.append(
            f'<tr><td><a href="{link}">{name}</a></td><td>{_format_seconds(runtime)}</td>'
            f"<td>{html.escape(when)}</td></tr>"
        )
    total = sum((r or {}).get("runtime") or 0 for r in _execution_records(app.env).values())
    machine = html.escape(app.config.course_machine)
    table = (
        f'<p class="course-machine">Measured on the machine that built this site: {machine}.</p>'
        '<table class="table course-times"><thead><tr><th>lecture</th>'
        f"<th>run time ({html.escape(mode)} mode)</th><th>executed</th></tr></thead><tbody>"
        + "".join(rows)
        + f"<tr><td><strong>all lectures</strong></td><td><strong>{_format_seconds(total)}"
        "</strong></td><td></td></tr></tbody></table>"
    )
    for placeholder in placeholders:
        placeholder.replace_self(nodes.raw("", table, format="html"))


def always_refresh_front_page(app, env, added, changed, removed):
    """The front page shows every lecture and its latest run time: read it again on every build."""
    return [app.config.root_doc] if app.config.root_doc in env.found_docs else []


# --------------------------------------------------------------------------- static widgets
def _widget_html(model_id: str, state: dict, depth: int = 0) -> str:
    """Disabled HTML controls for one widget model (and its children), at its saved values."""
    model = state.get(model_id)
    if model is None or depth > 8:
        return ""
    name = model.get("model_name", "")
    values = model.get("state", {})
    label = html.escape(str(values.get("description", "")))
    if name in ("HBoxModel", "VBoxModel", "BoxModel", "GridBoxModel"):
        children = [_widget_html(ref.replace("IPY_MODEL_", ""), state, depth + 1) for ref in values.get("children", [])]
        direction = "row" if name == "HBoxModel" else "column"
        return f'<div class="gd-widget-box gd-widget-{direction}">' + "".join(children) + "</div>"
    if name.endswith("SliderModel") and "value" in values:
        value = values["value"]
        low, high, step = values.get("min", 0), values.get("max", 100), values.get("step", 1)
        if isinstance(value, list):  # a range slider
            shown = " – ".join(f"{v:.4g}" for v in value)
            position = value[0]
        elif name == "FloatLogSliderModel":
            base = values.get("base", 10)
            shown, position = f"{value:.3g}", math.log(value, base) if value > 0 else low
            low, high = f"{base**low:.3g}", f"{base**high:.3g}"
            return (
                f'<label class="gd-widget">{label} <input type="range" disabled min="{values.get("min", 0)}" '
                f'max="{values.get("max", 1)}" step="{step}" value="{position}"> '
                f'<span class="gd-widget-value">{html.escape(shown)}</span>'
                f'<span class="gd-widget-range">({html.escape(str(low))} … {html.escape(str(high))})</span></label>'
            )
        else:
            shown, position = f"{value:.4g}" if isinstance(value, float) else str(value), value
        return (
            f'<label class="gd-widget">{label} <input type="range" disabled min="{low}" max="{high}" '
            f'step="{step}" value="{position}"> <span class="gd-widget-value">{html.escape(shown)}</span>'
            f'<span class="gd-widget-range">({html.escape(str(low))} … {html.escape(str(high))})</span></label>'
        )
    if "_options_labels" in values:  # Dropdown, RadioButtons, ToggleButtons, Select
        index = values.get("index")
        options = "".join(
            f"<option{' selected' if i == index else ''}>{html.escape(str(o))}</option>"
            for i, o in enumerate(values["_options_labels"])
        )
        return f'<label class="gd-widget">{label} <select disabled>{options}</select></label>'
    if name in ("CheckboxModel", "ToggleButtonModel"):
        checked = " checked" if values.get("value") else ""
        return f'<label class="gd-widget"><input type="checkbox" disabled{checked}> {label}</label>'
    if name in ("FloatProgressModel", "IntProgressModel"):
        return (
            f'<label class="gd-widget">{label} <progress value="{values.get("value", 0)}" '
            f'max="{values.get("max", 100)}"></progress></label>'
        )
    if "value" in values:  # Text, HTML, Label, FloatText, ...: their text
        text = re.sub(r"<[^>]+>", "", str(values["value"]))
        return f'<span class="gd-widget">{label} {html.escape(text)}</span>'
    return f'<span class="gd-widget">{label}</span>'


def _widget_state(env, docname: str) -> dict:
    from myst_nb.sphinx_ import NbMetadataCollector

    _, kwargs = NbMetadataCollector.get_js_files(env, docname).get("ipywidgets_state", (None, {}))
    body = kwargs.get("body")
    return json.loads(body).get("state", {}) if body else {}


class StaticWidgets(SphinxPostTransform):
    """Replace each widget view by its controls drawn as disabled HTML (before MyST-NB picks a
    mime type: without a widget manager the view would show nothing, or its Python repr)."""

    default_priority = 3  # MyST-NB's SelectMimeType runs at 4
    formats = ("html",)

    def run(self, **kwargs):
        state = None
        for bundle in list(self.document.findall(nodes.container)):
            if bundle.get("nb_element") != "mime_bundle":
                continue
            views = [child for child in bundle.children if child.get("mime_type") == WIDGET_VIEW]
            if not views:
                continue
            if state is None:
                state = _widget_state(self.env, self.env.docname)
            model_id = self._model_id(views[0])
            controls = _widget_html(model_id, state) if model_id else ""
            caption = (
                '<div class="gd-widget-caption">Interactive in the notebook: these controls redraw the '
                "figure when the lecture runs in Jupyter. Shown here at the values the figure was drawn for."
                "</div>"
            )
            bundle.replace_self(
                nodes.raw("", f'<div class="gd-static-widget">{caption}{controls}</div>', format="html")
            )

    @staticmethod
    def _model_id(view_container) -> str | None:
        for raw in view_container.findall(nodes.raw):
            match = re.search(r'"model_id":\s*"([0-9a-f]+)"', raw.astext())
            if match:
                return match.group(1)
        return None


def drop_widget_state(app: Sphinx, pagename, templatename, context, doctree):
    """The widget state is for a widget manager, which the site does not load: leave it out."""
    from myst_nb.sphinx_ import NbMetadataCollector

    NbMetadataCollector.get_doc_data(app.env).get(pagename, {}).get("js_files", {}).pop("ipywidgets_state", None)


# --------------------------------------------------------------------------- launch banner
def _find_button(buttons, text):
    for button in buttons:
        if button.get("text") == text:
            return button
        found = _find_button(button.get("buttons", []), text)
        if found is not None:
            return found
    return None


def launch_banner(app: Sphinx, pagename, templatename, context, doctree):
    """Lecture and assignment pages: how to run the notebook, above its first heading."""
    if not (pagename.startswith(LECTURES) or pagename.startswith(ASSIGNMENTS)) or "body" not in context:
        return
    source = context.get("sourcename", "")
    if not source.endswith(".ipynb"):
        return
    download = context["pathto"]("_sources/" + source, 1)
    repository = app.config.course_file_url + source
    links = []
    if pagename.startswith(LECTURES):
        hub = _find_button(context.get("header_buttons", []), "JupyterHub")
        if hub is not None:
            links.append(
                f'<a class="gd-hub-link" href="{html.escape(hub["url"])}">Open it on the course hub</a> '
                "(nbgitpuller copies the course into your hub folder, or updates your copy, "
                "and opens this notebook)"
            )
        intro = f"<strong>Run this lecture.</strong> Its outputs below were computed in {app.config.course_mode} mode."
    else:
        # assignments are fetched, worked on and submitted through nbgrader, not pulled from git
        context["header_buttons"][:] = [
            b for b in context.get("header_buttons", []) if b.get("label") != "launch-buttons"
        ]
        intro = (
            "<strong>Work on this assignment</strong> on the course hub: <em>Nbgrader → Assignment List → "
            "Fetch</em>, then <em>Submit</em> from there (only a fetched copy can be submitted)."
        )
    links.append(f'<a class="gd-download-link" href="{html.escape(download)}" download>download the notebook</a>')
    links.append(f'<a class="gd-source-link" href="{html.escape(repository)}">the notebook in the repository</a>')
    banner = (
        f'<div class="admonition tip gd-launch"><p>{intro}</p><ul>'
        + "".join(f"<li>{link}</li>" for link in links)
        + "</ul></div>"
    )
    body = context["body"]
    end = body.find("</h1>")
    context["body"] = body[: end + 5] + banner + body[end + 5 :] if end >= 0 else banner + body


def setup(app: Sphinx):
    app.add_config_value("course_mode", "quick", "env")
    app.add_config_value("course_machine", "", "env")  # CPU cores and GPU of the machine that executed the lectures
    app.add_config_value("course_schedule", "", "env")
    app.add_config_value("course_file_url", "", "env")  # a repository file's web page is this + its path
    app.add_directive("course-schedule", CourseSchedule)
    app.add_directive("lecture-times", LectureTimes)
    app.add_node(lecture_times, html=(lambda self, node: None, lambda self, node: None))
    app.add_post_transform(StaticWidgets)
    app.connect("env-get-outdated", always_refresh_front_page)
    app.connect("doctree-resolved", fill_lecture_times)
    app.connect("html-page-context", drop_widget_state, priority=400)
    app.connect("html-page-context", launch_banner, priority=600)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
