"""checkov on every rendered value set: no failed check, and every skip justified."""

from __future__ import annotations

import json
import re

from tests.k8s.conftest import Rendered, run, tool

# A skip annotation is `checkov.io/skipN: CKV_K8S_xx=<reason>`; the reason must
# say why, not just be present.
SKIP = re.compile(r"^(CKV2?_K8S_\d+)=(.+)$")


def test_checkov_finds_no_failed_check(rendered: dict[str, Rendered], tmp_path) -> None:
    # Every value set a cluster may run, in one checkov run (a few seconds).
    # Not skaffold-dev: `skaffold dev` deliberately makes the app images'
    # root filesystem writable so it can sync sources into them.
    for name, r in rendered.items():
        if name != "skaffold-dev":
            (tmp_path / f"{name}.yaml").write_text(r.text)
    # --skip-download: no calls to Prisma Cloud (CI has no Internet).
    proc = run(
        [
            tool("checkov"),
            "--quiet",
            "--compact",
            "--skip-download",
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--directory",
            str(tmp_path),
        ],
        check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"checkov printed no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        ) from None
    reports = report if isinstance(report, list) else [report]
    assert reports and all(r["check_type"] == "kubernetes" for r in reports)
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for r in reports
        for c in r["results"].get("failed_checks", [])
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100, f"checkov ran suspiciously few checks: {summary}"
    assert proc.returncode == 0


def test_every_checkov_skip_is_justified(rendered: dict[str, Rendered]) -> None:
    skips = []
    for r in rendered.values():
        for doc in r.docs:
            for key, value in (doc["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    match = SKIP.match(value)
                    assert match, (
                        f"{doc['kind']}/{doc['metadata']['name']}: malformed skip {value!r}"
                    )
                    assert len(match.group(2).split()) >= 8, (
                        f"skip {match.group(1)} needs a real reason: {value!r}"
                    )
                    skips.append(match.group(1))
    # The only skips: digest and pull policy of the images this project builds,
    # and probes on the run-to-completion test pod.
    assert set(skips) == {"CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_8", "CKV_K8S_9"}
