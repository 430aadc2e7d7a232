"""`git theta-like fsck`: every object every reachable manifest needs exists and is intact.

Locally each object is read, its delta chain decoded and the result checked against the raw
hash in the manifest; the object file itself must hash to its id. With `--remote`, the remote is
asked (one batch per 100 objects) whether it has each object. Problems are reported with the
commits, paths and tensors they affect.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from git_theta_like.display import printable
from git_theta_like.errors import ObjectCorruptError, ObjectMissingError, ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import UnconvertedFile, reachable_manifests, unconverted_files
from git_theta_like.lfs import anchors, sync
from git_theta_like.manifest import Manifest
from git_theta_like.progress import Progress
from git_theta_like.store import store_of


@dataclass
class Problem:
    kind: str  # missing | corrupt | missing-on-remote | lost | not-anchored | bad-manifest | not-converted
    oid: str
    detail: str
    affects: list[str] = field(default_factory=list)  # "commit path: tensor" examples


@dataclass
class FsckReport:
    manifests: int = 0
    objects: int = 0
    not_local: int = 0  # objects of pushed history that are only on the remote
    problems: list[Problem] = field(default_factory=list)
    remote: str | None = None  # the remote checked (--remote)
    anchors: bool = False  # and its anchor branch (theta-like.anchors)

    @property
    def ok(self) -> bool:
        return not self.problems


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def fsck(repo: Repo, remote: str | None = None, check_remote: bool = False) -> FsckReport:
    report = FsckReport()
    found = reachable_manifests(repo)
    # object id -> (raw hash expected first, stored size, a few "where" strings)
    wanted: dict[str, tuple[str, int, list[str]]] = {}
    # object id -> every (raw hash, raw length) a manifest line claims for it, each with a few
    # "where" strings: each claim is checked, not only the first (a hand-made manifest naming an
    # object that another manifest uses correctly is still caught)
    claims: dict[str, dict[tuple[str, int], list[str]]] = {}
    local_only: set[str] = set()  # needed by manifests no remote-tracking ref reaches
    for fm in found.values():
        if fm.manifest is None:
            uses = ", ".join(f"{w} {p}" for w, p in fm.uses[:3])
            report.problems.append(Problem("bad-manifest", fm.blob, fm.error or "invalid", [uses]))
            continue
        report.manifests += 1
        for (what, ref), length in zip(fm.manifest.objects(), _lengths(fm.manifest), strict=True):
            use = f"{fm.uses[0][0]} {fm.uses[0][1]}: {what}"
            entry = wanted.setdefault(ref.oid, (ref.raw, ref.stored, []))
            if len(entry[2]) < 3:
                entry[2].append(use)
            claim = claims.setdefault(ref.oid, {}).setdefault((ref.raw, length), [])
            if len(claim) < 3:
                claim.append(use)
            if not fm.pushed:
                local_only.add(ref.oid)
    report.objects = len(wanted)
    store = store_of(repo)
    total_bytes = sum(size for _, size, _ in wanted.values())
    progress = Progress("Checking objects", total=len(wanted), total_bytes=total_bytes, delay=1.0)
    for oid, (_raw, size, where) in sorted(wanted.items()):
        progress.step(size)  # counted as it starts: the loop's ways out are many
        if not store.has(oid):
            # Objects of pushed history may live only on the remote (a clone fetches on demand;
            # --remote checks them there). Unpushed work must be complete locally.
            if oid in local_only:
                report.problems.append(Problem("missing", oid, "not in the local store (unpushed)", where))
            else:
                report.not_local += 1
            continue
        try:
            if _file_hash(str(store.path(oid))) != oid:
                raise ObjectCorruptError(f"object {oid}: its bytes do not hash to its id")
            header = store.read_header(oid)
            matched = None
            for (raw, length), users in sorted(claims[oid].items()):
                if (header.raw, header.size) == (raw, length):
                    matched = (raw, length)
                    continue
                report.problems.append(
                    Problem(
                        "corrupt",
                        oid,
                        f"object {oid} holds {header.size} bytes of content {header.raw[:12]}…, "
                        f"the manifest expects {length} bytes of content {raw[:12]}…",
                        users,
                    )
                )
            if matched is not None:  # decoded once, bounded by a manifest's length
                store.read_raw(oid, "object", matched[0], 0, matched[1])
        except ObjectMissingError as e:  # a delta base is missing
            if oid in local_only:
                report.problems.append(Problem("missing", oid, str(e), where))
            else:
                report.not_local += 1  # its chain is on the remote, fetched on demand
        except ThetaLikeError as e:  # corrupt, or a header or payload no parser accepts
            report.problems.append(Problem("corrupt", oid, str(e), where))
    progress.finish()
    if check_remote:
        _check_remote(repo, remote or sync.default_remote(repo), wanted, report)
    report.problems.extend(unconverted_problems(repo))
    return report


def _check_remote(
    repo: Repo, remote: str, wanted: dict[str, tuple[str, int, list[str]]], report: FsckReport
) -> None:
    """Whether the remote has every object (batch API) and, unless theta-like.anchors is off,
    whether its anchor branch points to each one it has; then the command that repairs it."""
    from git_theta_like.lfs.transfer import RemoteStore

    report.remote = remote
    report.anchors = anchors.enabled(repo)
    store = store_of(repo)
    objs = sync.chain_closure(repo, [(o, s) for o, (_, s, _) in wanted.items()])
    missing = RemoteStore(repo, remote).missing_on_remote(objs)
    for oid in missing:
        where = wanted.get(oid, ("", 0, []))[2]
        if store.has(oid):
            report.problems.append(Problem("missing-on-remote", oid, "the remote does not have it", where))
        else:
            report.problems.append(
                Problem("lost", oid, "neither the remote nor the local store has it", where)
            )
    if report.anchors:
        gone = set(missing)
        sizes = anchors.true_sizes(repo, [(o, s) for o, s in objs if o not in gone])
        for oid in sorted(anchors.unanchored(anchors.fetch_tip(repo, remote), sizes)):
            report.problems.append(
                Problem(
                    "not-anchored",
                    oid,
                    f"no git-lfs pointer on {remote}'s {anchors.BRANCH} branch names it: a server that "
                    "garbage-collects LFS objects (the Hugging Face Hub) will delete it",
                    wanted.get(oid, ("", 0, []))[2],
                )
            )


def _lengths(manifest: Manifest) -> list[int]:
    """The raw length of each object of manifest.objects(), in the same order."""
    return [manifest.skeleton_length] + [t.length for t in manifest.tensors]


def unconverted_problems(repo: Repo) -> list[Problem]:
    """Tracked paths at HEAD or in the index whose blob is not a manifest (git-lfs's "should have
    been pointers"): each a problem that says how to convert it."""
    from git_theta_like.display import human_size

    sources: list[tuple[str, str | None]] = [("index", None)]
    if not repo.git.head_is_unborn:
        sources.insert(0, ("HEAD", "HEAD"))
    found: dict[tuple[str, str], tuple[UnconvertedFile, list[str]]] = {}
    for where, rev in sources:
        for f in unconverted_files(repo, rev):
            found.setdefault((f.path, f.blob), (f, []))[1].append(where)
    problems = []
    for f, wheres in found.values():
        size = f" ({human_size(f.size)}), added without the filter" if f.kind == "raw" else ""
        problems.append(
            Problem(
                "not-converted",
                f.blob,
                f"{f.path} should have been a manifest: git-theta-like tracks it but its blob is "
                f"{f.what}{size}; fix: {f.fix}",
                [f"{w} {f.path}" for w in wheres],
            )
        )
    return problems


def format_report(report: FsckReport) -> str:
    lines = [f"checked {report.manifests} manifest(s), {report.objects} object(s)"]
    if report.not_local:
        lines.append(f"{report.not_local} object(s) of pushed history are not local (fetched on demand)")
    for p in report.problems:
        lines.append(f"{p.kind}: {p.oid}: {p.detail}")
        lines.extend(f"    used by {a}" for a in p.affects)
    lines.append("ok" if report.ok else f"{len(report.problems)} problem(s)")
    lines.extend(repairs(report))
    return "\n".join(printable(line) for line in lines)  # paths and names come from repositories


def repairs(report: FsckReport) -> list[str]:
    """What repairs the remote's problems a report found, one line each."""
    count = {
        k: sum(1 for p in report.problems if p.kind == k)
        for k in ("missing-on-remote", "not-anchored", "lost")
    }
    out = []
    push = f"`git theta-like push --all {report.remote}`"
    if count["missing-on-remote"] and count["not-anchored"]:
        out.append(
            f"run {push} to upload the {count['missing-on-remote']} missing object(s) and anchor them "
            f"and the {count['not-anchored']} unanchored one(s)"
        )
    elif count["missing-on-remote"]:
        also = " and anchor them" if report.anchors else ""
        out.append(f"run {push} to upload the {count['missing-on-remote']} missing object(s){also}")
    elif count["not-anchored"]:
        out.append(f"run {push} to anchor the {count['not-anchored']} unanchored object(s)")
    if count["lost"]:
        out.append(
            f"{count['lost']} object(s) are neither on {report.remote} nor here: this clone cannot repair "
            f"them (a clone that still has them can, with {push}); the commits that use them cannot be "
            "checked out"
        )
    return out
