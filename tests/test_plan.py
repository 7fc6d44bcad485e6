"""The plan format: the standard plan loads; every mistake is named with file, line and field."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.plan import load_plan, parse_plan
from harness.runner import validate_plan_steps
from harness.yamlio import YamlError

from conftest import PLAN

GOOD = textwrap.dedent("""\
    plan:
      id: p1
      version: "1"
      title: t
      scheme: s
    requirements:
      - id: R1
        title: r
        rationale: why
        steps:
          - id: s1
            probe: pcie_identity
            check: identity_matches_reference
            reference: pcie.identity
    """)


def test_standard_plan_loads_and_names_known_probes():
    plan = load_plan(PLAN)
    validate_plan_steps(plan)
    assert plan.id == "attestlab-level1"
    ids = [r.id for r in plan.requirements]
    assert "L1-PCIE-IDENTITY" in ids and "L1-PCIE-CAPABILITIES" in ids
    assert len(plan.sha256) == 64


def test_plan_digest_changes_with_any_byte():
    assert parse_plan(GOOD, "a.yaml").sha256 != parse_plan(GOOD + "# x\n", "a.yaml").sha256


def _error(text: str) -> str:
    with pytest.raises(YamlError) as info:
        plan = parse_plan(text, "bad.yaml")
        validate_plan_steps(plan)
    return str(info.value)


def test_unknown_field_is_named_with_its_line():
    assert _error(GOOD.replace("        check:", "        chek:")).startswith(
        "bad.yaml:13: requirements[0].steps[0].chek: unknown field")


def test_missing_field_is_named():
    message = _error(GOOD.replace("    rationale: why\n", ""))
    assert message.startswith("bad.yaml:7: requirements[0].rationale: required")


def test_wrong_type_is_named():
    text = GOOD.split("    steps:")[0] + "    steps: 3\n"
    assert _error(text) == "bad.yaml:10: requirements[0].steps: expected a list, got int 3"


def test_duplicate_requirement_ids_are_refused():
    text = GOOD + textwrap.indent(GOOD.split("requirements:\n", 1)[1], "")
    assert "duplicate requirement id 'R1'" in _error(text)


def test_duplicate_yaml_keys_are_refused():
    assert "duplicate key 'title'" in _error(GOOD.replace("  title: t\n", "  title: t\n  title: u\n"))


def test_unknown_probe_is_named_with_the_step_line():
    message = _error(GOOD.replace("probe: pcie_identity", "probe: pcie_identiy"))
    assert message.startswith("bad.yaml:11: requirements.R1.steps.s1: unknown probe 'pcie_identiy'")


def test_unknown_check_and_parameter_are_named():
    assert "has no check 'nope'" in _error(GOOD.replace("identity_matches_reference", "nope"))
    assert "takes no parameter 'speed'" in _error(GOOD.replace("        reference:", "        params: {speed: 1}\n        reference:"))


def test_expect_and_reference_together_are_refused():
    assert "either 'expect'" in _error(GOOD.replace("        reference:", "        expect: {}\n        reference:"))


def test_invalid_yaml_names_the_line():
    assert _error("plan: {id: [\n").startswith("bad.yaml:")


def test_empty_plan_is_refused():
    assert "empty" in _error("")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_gives_a_plan_or_a_clear_error(text):
    try:
        parse_plan(text, "fuzz.yaml")
    except YamlError as exc:
        assert str(exc).startswith("fuzz.yaml")


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["plan", "requirements", "id", "title", "rationale", "steps", "probe", "check", "params",
         "expect", "reference", "version", "scheme", "x"]), inner, max_size=6)), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_any_yaml_structure_gives_a_plan_or_a_clear_error(value):
    text = yaml.safe_dump(value)
    try:
        plan = parse_plan(text, "fuzz.yaml")
        validate_plan_steps(plan)
    except YamlError as exc:
        assert str(exc).startswith("fuzz.yaml")


def test_billion_laughs_does_not_expand():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(12))
    # anchors are shared, not expanded: the loader returns at once and the shape error is precise
    assert _error(bomb) == "bad.yaml:1: a: unknown field (known: plan, requirements)"


@pytest.mark.parametrize("variant", [lambda b: b"\xef\xbb\xbf" + b, lambda b: b.replace(b"\n", b"\r\n"),
                                     lambda b: b + b"\n# a comment\n"])
def test_plan_digest_is_over_the_exact_bytes_of_the_file(tmp_path, variant):
    import hashlib
    raw = variant(PLAN.read_bytes())
    path = tmp_path / "plan.yaml"
    path.write_bytes(raw)
    assert load_plan(path).sha256 == hashlib.sha256(raw).hexdigest() != load_plan(PLAN).sha256


def test_a_plan_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    import os
    os.mkfifo(tmp_path / "plan.yaml")
    with pytest.raises(YamlError, match="a FIFO, not a regular file"):
        load_plan(tmp_path / "plan.yaml")
    with pytest.raises(YamlError, match="a character device"):
        load_plan("/dev/zero")
