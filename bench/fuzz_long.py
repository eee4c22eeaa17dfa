"""Run the suite's fuzzers far longer than CI does, and print what each one did.

Run: ``.venv/bin/python bench/fuzz_long.py [--examples N] [--only TARGET] [--seed S]``

The fuzzers are the Hypothesis tests of ``tests/unit`` named in `TARGETS`: the AMI and AGI
codecs, the number classifier, `evaluate`, and the policy loader. In the test suite they run
with the ``ci`` profile (tests/conftest.py: 100 examples each); here each gets ``--examples``
(default 20,000) with no deadline and no example database, so a run starts from scratch and
leaves nothing behind. For every fuzzer it prints the examples run (every call of the test
body, shrinking included), whether it failed, and the time taken; a failure is printed with
Hypothesis's report (the minimal failing input and how to reproduce it) and makes the exit
status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import seed as use_seed

ROOT = Path(__file__).parents[1]

# target -> the Hypothesis tests that fuzz it ("module:function", modules under tests/unit).
TARGETS: dict[str, list[str]] = {
    "ami codec": [
        "test_ami_codec:test_fuzz_any_bytes_split_anywhere_give_the_same_results",
        "test_ami_codec:test_fuzz_a_capture_with_garbage_spliced_in",
        "test_ami_codec:test_fuzz_encoding_refuses_or_round_trips",
    ],
    "agi codec": [
        "test_agi_codec:test_fuzz_any_bytes_give_events_or_a_protocol_error_whatever_the_split",
        "test_agi_codec:test_fuzz_commands_are_built_or_refused_never_broken",
    ],
    "number classifier": [
        "test_dialled_strings:test_the_classifier_is_total_and_explains_every_refusal",
        "test_dialled_strings:test_no_spelling_of_a_forbidden_number_is_allowed",
        "test_dialled_strings:test_an_emergency_number_in_any_spelling_is_an_emergency_call",
        "test_dialled_strings:test_classification_is_invariant_to_spelling_and_formatting",
        "test_dialled_strings:test_feature_code_patterns_agree_with_asterisk",
        "test_numbers:test_classify_never_raises",
    ],
    "evaluate": [
        "test_evaluate:test_evaluate_is_total",
        "test_evaluate:test_fuzz_evaluate_is_total_on_hostile_dialled_strings",
    ],
    "policy loader": [
        "test_policy_file:test_fuzz_a_policy_document_loads_or_is_refused_with_a_policy_error",
        "test_policy_file:test_fuzz_any_text_loads_or_is_refused_with_a_policy_error",
    ],
}


@dataclass
class Outcome:
    target: str
    test: str
    examples: int
    seconds: float
    failure: str


def _load(spec: str) -> Callable[..., Any]:
    module_name, function_name = spec.split(":")
    module = importlib.import_module(f"tests.unit.{module_name}")
    test: Callable[..., Any] = getattr(module, function_name)
    return test


def _run(target: str, spec: str, seed: int | None) -> Outcome:
    test = _load(spec)
    calls = 0
    inner = test.hypothesis.inner_test  # type: ignore[attr-defined]

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return inner(*args, **kwargs)

    test.hypothesis.inner_test = counted  # type: ignore[attr-defined]
    if seed is not None:
        test = use_seed(seed)(test)
    started = time.perf_counter()
    failure = ""
    try:
        test()
    except KeyboardInterrupt:
        raise
    except BaseException:  # any failure of the test (an ExceptionGroup too) is reported
        failure = traceback.format_exc()
    return Outcome(target, spec.split(":")[1], calls, time.perf_counter() - started, failure)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzzers and print a line per fuzzer; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=20_000, help="examples per fuzzer")
    parser.add_argument("--only", choices=sorted(TARGETS), action="append", help="a target")
    parser.add_argument("--seed", type=int, help="a fixed seed, to repeat a run exactly")
    args = parser.parse_args(argv)

    # Profiles are read when a test is decorated: load this one before importing the tests.
    settings.register_profile(
        "fuzz-long",
        max_examples=args.examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    settings.load_profile("fuzz-long")
    sys.path.insert(0, str(ROOT))

    targets = args.only or list(TARGETS)
    print(f"fuzzing {', '.join(targets)}: up to {args.examples:,} examples per fuzzer")
    outcomes: list[Outcome] = []
    for target in targets:
        for spec in TARGETS[target]:
            outcome = _run(target, spec, args.seed)
            outcomes.append(outcome)
            status = "FAILED" if outcome.failure else "ok"
            print(
                f"  {target:<17} {outcome.test:<72} {outcome.examples:>8,} examples "
                f"{outcome.seconds:>7.1f} s  {status}",
                flush=True,
            )
            if outcome.failure:
                print(outcome.failure, flush=True)

    print()
    print(f"{'target':<17} {'fuzzers':>7} {'examples':>10} {'failures':>8}")
    for target in targets:
        mine = [o for o in outcomes if o.target == target]
        failed = sum(1 for o in mine if o.failure)
        examples = sum(o.examples for o in mine)
        print(f"{target:<17} {len(mine):>7} {examples:>10,} {failed:>8}")
    return 1 if any(o.failure for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
