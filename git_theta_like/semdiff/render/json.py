"""JSON documents of diffs and logs (docs/diff-schema.json, docs/log-schema.json)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from typing import Any

from git_theta_like.semdiff import model
from git_theta_like.semdiff.render.text import kind_counts


def _num(x: float | None) -> float | None:
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return None
    return x


def _side_json(s: model.TensorSide | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "dtype": s.dtype,
        "shape": list(s.shape),
        "numel": s.numel,
        "sha256": s.raw,
        "oid": s.oid,
        "stored": s.stored,
        "codec": s.codec,
    }


def _stats_json(st: model.TensorStats | None) -> dict[str, Any] | None:
    """Every field of the statistics, in their order (the schema's names), NaN or inf as null."""
    return None if st is None else {k: _num(v) for k, v in asdict(st).items()}


def tensor_json(e: model.TensorDiff) -> dict[str, Any]:
    return {
        "name": e.name,
        "status": e.status,
        "group": e.group,
        "old_name": e.old_name,
        "old": _side_json(e.old),
        "new": _side_json(e.new),
        "content_changed": e.content_changed,
        "shape_changed": e.shape_changed,
        "dtype_changed": e.dtype_changed,
        "stats": _stats_json(e.stats),
        "kind": None
        if e.kind is None
        else {"kind": e.kind.kind, "label": e.kind.label, "rank": e.kind.rank, "percent": e.kind.percent},
        "below_threshold": e.below_threshold,
        "old_shard": e.old_shard,
        "new_shard": e.new_shard,
    }


def _file_side_json(s: model.FileSide | None) -> dict[str, Any] | None:
    """Every field of the file's side, in their order (the schema's names)."""
    return None if s is None else asdict(s)


def file_summary_json(f: model.FileDiff) -> dict[str, Any]:
    return {
        "modified": f.count("modified"),
        "reshaped": f.count("reshaped"),
        "renamed": f.count("renamed"),
        "moved": f.count("moved"),
        "added": f.count("added"),
        "removed": f.count("removed"),
        "unchanged": f.unchanged,
        "below_threshold": f.below_threshold,
        "params_changed": f.params_changed,
        "l2_delta": _num(f.l2_delta),
        "stored_bytes": f.stored_bytes,
    }


def file_json(f: model.FileDiff, stat: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": f.path,
        "status": f.status,
        "old": _file_side_json(f.old),
        "new": _file_side_json(f.new),
        "shards": {"old": f.old_shards, "new": f.new_shards},
        "whole_file": f.whole,
        "header_changed": f.header_changed,
        "stats_computed": f.stats_computed,
        "summary": file_summary_json(f),
    }
    if f.note:
        out["note"] = f.note
    if not stat:
        out["tensors"] = [tensor_json(e) for e in f.tensors]
    return out


def to_json(r: model.DiffResult, stat: bool = False) -> dict[str, Any]:
    fs = [f for f in r.files if f.differs]
    totals = Counter[str]()
    for f in r.files:
        for k, v in file_summary_json(f).items():
            if isinstance(v, int) and k not in ("params_changed",):
                totals[k] += v
    pcs = [f.params_changed for f in r.files]
    return {
        "schema": model.SCHEMA,
        "version": model.SCHEMA_VERSION,
        "old": r.old_label,
        "new": r.new_label,
        "threshold": r.threshold,
        "differs": r.differs,
        "files": [file_json(f, stat) for f in r.files],
        "summary": {
            "files_changed": len(fs),
            "files_added": sum(1 for f in fs if f.old is None),
            "files_removed": sum(1 for f in fs if f.new is None),
            **{
                k: totals[k]
                for k in (
                    "modified",
                    "reshaped",
                    "renamed",
                    "moved",
                    "added",
                    "removed",
                    "unchanged",
                    "below_threshold",
                    "stored_bytes",
                )
            },
            "params_changed": None if any(p is None for p in pcs) else sum(p for p in pcs if p is not None),
        },
    }


def render_json(r: model.DiffResult, stat: bool = False) -> str:
    return json.dumps(to_json(r, stat), indent=2, allow_nan=False) + "\n"


def log_json(entries: list[model.LogEntry]) -> dict[str, Any]:
    commits = []
    for e in entries:
        commits.append(
            {
                "commit": e.commit,
                "parents": e.parents,
                "author": e.author,
                "date": e.date,
                "subject": e.subject,
                "stored_bytes": e.stored_bytes,
                "files": [
                    {
                        "path": f.path,
                        "status": f.status,
                        "summary": file_summary_json(f),
                        "kinds": dict(kind_counts(f)),
                    }
                    for f in e.files
                ],
            }
        )
    return {"schema": model.LOG_SCHEMA, "version": model.SCHEMA_VERSION, "commits": commits}


def render_log_json(entries: list[model.LogEntry]) -> str:
    return json.dumps(log_json(entries), indent=2, allow_nan=False) + "\n"
