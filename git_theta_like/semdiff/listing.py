"""What `show` and `ls-files` print about tracked checkpoints: per-tensor storage (codec, stored
bytes, delta depth) and the merge recipe a merged tensor records."""

from __future__ import annotations

from git_theta_like.display import counted, human_size, printable
from git_theta_like.manifest import Manifest


def describe(m: Manifest, path: str) -> str:
    """A per-tensor table: dtype, shape, codec, stored bytes, delta depth."""
    lines = [
        f"{path}: {m.format}, {counted(len(m.tensors), 'tensor')}, {human_size(m.size)}, "
        f"stored {human_size(m.stored_size)} ({m.stored_size / max(1, m.size):.3f}x)",
        f"  {'codec':<8} {'stored':>10} {'ratio':>6} {'depth':>5}  {'dtype':<6} {'shape':<16} name",
        f"  {m.skeleton.codec:<8} {human_size(m.skeleton.stored):>10} "
        f"{m.skeleton.stored / max(1, m.skeleton_length):>6.3f} {0:>5}  {'':<6} {'':<16} (skeleton)",
    ]
    merged: dict[str, int] = {}
    for t in m.tensors:
        shape = "[" + ",".join(map(str, t.shape)) + "]"
        recipe = merge_recipe(t.obj.extra)
        if recipe:
            name = recipe.split(" ", 1)[0]
            merged[name] = merged.get(name, 0) + 1
        lines.append(
            f"  {t.obj.codec:<8} {human_size(t.obj.stored):>10} {t.obj.stored / max(1, t.length):>6.3f} "
            f"{t.obj.depth:>5}  {t.dtype:<6} {shape:<16} {t.name}"
            + (f"  [merged: {recipe}]" if recipe else "")
        )
    if merged:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(merged.items()))
        lines.insert(1, f"  merge recipe: {sum(merged.values())} tensors merged ({counts})")
    return "\n".join(printable(line) for line in lines)  # names and paths come from repositories


def merge_recipe(extra: tuple[tuple[str, str], ...]) -> str | None:
    """`ties density=0.2 lambda=1.0` from a tensor line's `merge=` / `merge-params=` fields (the
    merge driver records them on the tensors a strategy chose; `... in bfloat16` where it records
    a precision), else None."""
    fields = dict(extra)
    if "merge" not in fields:
        return None
    words = [
        fields["merge"],
        *(p.replace(":", "=", 1) for p in fields.get("merge-params", "").split(",") if p),
    ]
    if "merge-precision" in fields:
        words += ["in", fields["merge-precision"]]
    return " ".join(words)
