"""Section 0 of the report, first on the page: "Can these numbers be trusted?"

In the paper's data (Chatterjee et al., J. Imaging 2024) every COVID-19 image is an adult from one collection
and nearly every normal image a child from another: a model can score by recognising the collection
(DeGrave et al., Nat. Mach. Intell. 2021). Before any metric, the report says what checked for that:

* a verdict in plain words: the confounder audit's flags and what they mean for the in-domain numbers, how the
  micro F1 moves on each external set; if nothing is flagged, what was checked; which checks have not been run
  and the command that runs them;
* the confounder audit per column (``trust_audit``);
* the external sets beside the in-domain numbers and their most confident errors (``trust_external``);
* the shortcut audit of the explanation maps, split by image source (``trust_shortcut``).

Every part may be missing: the section is never empty and the report still builds.
"""

from __future__ import annotations

from typing import Any

from cxrlens.report.assets import AssetWriter
from cxrlens.report.trust_audit import audit_part
from cxrlens.report.trust_external import external_part, sentence
from cxrlens.report.trust_shortcut import shortcut_part, summary
from cxrlens.run.folder import Run

MEANING = (
    "The in-domain numbers of this report (section 2) may therefore measure the collection an image comes from "
    "rather than the disease: a model can score by recognising the collection instead of reading the lungs. "
    "Trust them only as far as the external sets and the checks below support them."
)


def trust_section(run: Run, assets: AssetWriter) -> dict[str, Any]:
    """The verdict, the audit, the external sets and the shortcut audit (each ``available`` or ``missing``)."""
    audit = audit_part(run, assets)
    external = external_part(run, assets)
    shortcut = shortcut_part(run, assets)
    return {
        "available": bool(audit["available"] or external["available"]),
        "verdict": verdict(audit, external, shortcut),
        "audit": audit,
        "external": external,
        "shortcut": shortcut,
    }


def verdict(audit: dict[str, Any], external: dict[str, Any], shortcut: dict[str, Any]) -> dict[str, Any]:
    """The plain-words verdict: flags and their meaning, or what was checked; the external sets; what is missing.

    ``flagged`` is whether the confounder audit flagged anything; ``checked`` (what was checked) is filled only
    when it did not; ``missing`` names the command of each check that has not been run (or cannot be read).
    """
    flags = list(audit["flags"]) if audit["available"] else []
    sets = external["sets"] if external["available"] else []
    checked: list[str] = []
    if not flags:
        if audit["available"]:
            checked.append(audit["checked"] or "The confounder audit ran and flagged nothing.")
        if sets:
            names = ", ".join(_set_name(s) for s in sets)
            checked.append(f"The models were validated on {len(sets)} external set(s): {names}.")
        short = summary(shortcut)
        if short:
            checked.append(short)
    missing = [part["missing"] for part in (audit, external, shortcut) if not part["available"]]
    if not flags and audit["available"]:
        lead = "Nothing flagged by the confounder audit."
    elif flags:
        lead = f"The confounder audit flagged {len(flags)} finding(s):"
    else:
        lead = "The confounder audit is not available, so nothing could be flagged."
    return {
        "flagged": bool(flags),
        "lead": lead,
        "flags": flags,
        "meaning": MEANING if flags else None,
        "external": [sentence(s) for s in sets],
        "checked": checked,
        "missing": missing,
    }


def _set_name(item: dict[str, Any]) -> str:
    if item.get("problem") or item.get("images") is None:
        return str(item["name"])
    patients = f" of {item['patients']} patients" if item.get("patients") is not None else ""
    return f"{item['name']} ({item['images']} images{patients})"
