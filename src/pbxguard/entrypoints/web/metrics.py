"""The guard's counters in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

from pbxguard.app.overview import GuardCounters


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(counters: GuardCounters) -> str:
    """Return the metrics page."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("pbxguard_decisions_total", "counter", "Verdicts given, by number class and verdict.")
    for (number_class, verdict), count in sorted(counters.decisions.items()):
        lines.append(
            f'pbxguard_decisions_total{{class="{_label(number_class)}",'
            f'verdict="{_label(verdict)}"}} {count}'
        )
    family("pbxguard_hangups_total", "counter", "Hangups sent, confirmed and failed.")
    for state, count in (
        ("sent", counters.hangups_sent),
        ("confirmed", counters.hangups_confirmed),
        ("failed", counters.hangups_failed),
    ):
        lines.append(f'pbxguard_hangups_total{{state="{state}"}} {count}')
    family("pbxguard_ami_events_total", "counter", "AMI events received.")
    lines.append(f"pbxguard_ami_events_total {counters.ami_events}")
    family("pbxguard_ledger_writes_total", "counter", "Ledger facts written to the database.")
    lines.append(f"pbxguard_ledger_writes_total {counters.ledger_written}")
    family("pbxguard_ledger_set_aside_total", "counter", "Ledger facts set aside.")
    lines.append(f"pbxguard_ledger_set_aside_total {counters.ledger_set_aside}")
    family("pbxguard_journal_pending", "gauge", "Facts waiting in the journal for the database.")
    lines.append(f"pbxguard_journal_pending {counters.journal_pending}")
    family("pbxguard_alerts_open", "gauge", "Alerts raised and not cleared.")
    lines.append(f"pbxguard_alerts_open {counters.alerts_open}")
    name = "pbxguard_fastagi_request_seconds"
    family(name, "histogram", "FastAGI requests served, from accept to answer.")
    for bound, count in counters.fastagi_buckets:
        lines.append(f'{name}_bucket{{le="{bound}"}} {count}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {counters.fastagi_count}')
    lines.append(f"{name}_sum {counters.fastagi_sum}")
    lines.append(f"{name}_count {counters.fastagi_count}")
    return "\n".join(lines) + "\n"
