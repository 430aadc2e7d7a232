"""Renderers of diffs and logs for people (text), for CI (Markdown) and for programs (JSON,
schema in docs/diff-schema.json); `plot` draws a heat map. They read the semdiff data model only."""

from __future__ import annotations

from git_theta_like.semdiff.render.json import render_json, render_log_json
from git_theta_like.semdiff.render.markdown import render_log_markdown, render_markdown
from git_theta_like.semdiff.render.text import render_log_text, render_text

RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown}
LOG_RENDERERS = {"text": render_log_text, "json": render_log_json, "markdown": render_log_markdown}
