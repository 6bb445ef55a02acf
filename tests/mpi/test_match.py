"""Unit tests of the pure scoring: normalisation, comparisons and the decision rules."""

from __future__ import annotations

from typing import Any

import pytest

from hub.mpi.match import (
    MatchConfig,
    blocking_keys,
    compare,
    estimate_weights,
    features,
    is_placeholder,
    levels,
    name_tokens,
    normalise_phone,
    parse_nik,
    worth_comparing,
)
from tests.mpi.builders import patient

NIK_SARI = "3171015505900003"  # woman (day 15 + 40), born 1990-05-15, Jakarta Pusat
NIK_BUDI = "3374010312850001"  # man, born 1985-12-03, Semarang


def score(a: dict[str, Any], b: dict[str, Any], config: MatchConfig | None = None) -> Any:
    return compare(features(a), features(b), config)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Muhammad Rizki", "Moh. Rizki"),
        ("Muhamad Rizki", "Mohd. Rizki"),
        ("Mochammad Rizki", "Muhammad Rizki"),
        ("Tn. Budi Santoso", "Budi Santoso"),
        ("Hj. Siti Aminah, S.Pd.", "Siti Aminah"),
        ("Soekarno", "Sukarno"),
        ("Djoko Tjahjono", "Joko Cahyono"),
        ("Nur Hayati", "Nurhayati"),
    ],
)
def test_name_variants_normalise_to_the_same_tokens(a: str, b: str) -> None:
    assert "".join(name_tokens(a)) == "".join(name_tokens(b))


def test_placeholders() -> None:
    for name in ("Bayi Ny. Sari", "By. Ny. Sari Dewi", "Unknown", "Tn. X", "Ny X", "tidak dikenal", ""):
        assert is_placeholder(name), name
    for name in ("Budi", "Xaverius Tan", "Nyoman Sudarsana", "Bayu Aji"):
        assert not is_placeholder(name), name
    custom = MatchConfig(placeholders=(r"^pasien\b",))
    assert is_placeholder("Pasien Baru", custom) and not is_placeholder("Bayi Ny. Sari", custom)


def test_phone_normalisation() -> None:
    assert normalise_phone("+62 812-3456-7890") == normalise_phone("0812 3456 7890") == "081234567890"
    assert normalise_phone("62812345678") == "0812345678"
    assert normalise_phone("123") is None


def test_nik_validation() -> None:
    sari = parse_nik(NIK_SARI)
    assert (
        sari is not None and sari.female and (sari.birth_day, sari.birth_month, sari.birth_yy) == (15, 5, 90)
    )
    assert sari.district == "317101"
    budi = parse_nik("3374 0103 1285 0001")
    assert budi is not None and not budi.female
    assert parse_nik("317101550590000") is None  # 15 digits
    assert parse_nik("0071015505900003") is None  # no province 00
    assert parse_nik("9971015505900003") is None  # no province 99
    assert parse_nik("3100015505900003") is None  # city 00
    assert parse_nik("3171017505900003") is None  # day 75 - 40 = 35
    assert parse_nik("3171011513900003") is None  # month 13
    assert parse_nik("3171015505900000") is None  # serial 0000


def test_nik_agreement_is_a_match_despite_name_spelling() -> None:
    a = patient("RSA", "1", "Siti Aminah", "1990-05-15", "female", nik=NIK_SARI)
    b = patient("RSB", "2", "Sitti Aminah", "1990-05-15", "female", nik=NIK_SARI)
    result = score(a, b)
    assert (result.outcome, result.reason, result.grade) == ("match", "nik", "certain")


def test_shared_nik_with_contradicting_demographics_is_only_possible() -> None:
    mother = patient("RSA", "1", "Siti Aminah", "1990-05-15", "female", nik=NIK_SARI)
    husband = patient("RSB", "2", "Bambang Wijaya", "1982-02-20", "male", nik=NIK_SARI)
    result = score(mother, husband)
    assert (result.outcome, result.reason) == ("possible", "NIK conflict")


def test_an_invalid_nik_is_never_deterministic() -> None:
    a = patient("RSA", "1", "Budi Santoso", "1985-12-03", "male", nik="1234")
    b = patient("RSB", "2", "Agus Salim", "1970-01-01", "male", nik="1234")
    assert score(a, b).outcome == "no-match"


def test_probabilistic_match_on_name_variant_transposed_date_address_and_phone() -> None:
    a = patient(
        "RSA",
        "1",
        "Muhammad Rizki Ramadhan",
        "1990-03-12",
        "male",
        phone="+62 812 3456 7890",
        district="317101",
    )
    b = patient(
        "RSB", "2", "Moh. Rizky Ramadan", "1990-12-03", "male", phone="0812-3456-7890", district="317101"
    )
    result = score(a, b)
    levels = {c.field: c.level for c in result.comparisons}
    assert levels["birthDate"] == "transposed" and levels["name"] == "close"
    assert levels["telecom"] == "agree" and levels["locality"] == "district"
    assert (result.outcome, result.grade) == ("match", "probable")


def test_year_typo_counts_as_partial_agreement() -> None:
    a = patient("RSA", "1", "Budi Santoso", "1985-12-03", "male", district="337401", line="Jl. Pemuda 12")
    b = patient("RSB", "2", "Budi Santoso", "1958-12-03", "male", district="337401", line="Jl Pemuda No 12")
    levels = {c.field: c.level for c in score(a, b).comparisons}
    assert levels["birthDate"] == "typo"
    assert score(a, b).outcome == "match"


def test_same_name_different_birth_date_and_place_is_no_match() -> None:
    a = patient("RSA", "1", "Muhammad Rizki", "1990-03-12", "male", district="317101")
    b = patient("RSB", "2", "Muhammad Rizki", "2001-07-25", "male", district="357801")
    assert score(a, b).outcome == "no-match"


def test_name_and_birth_date_alone_is_at_most_possible() -> None:
    a = patient("RSA", "1", "Dewi Lestari", "1992-08-17", "female")
    b = patient("RSB", "2", "Dewi Lestari", "1992-08-17", "female")
    result = score(a, b)
    assert result.outcome in ("possible", "match")
    strict = MatchConfig(match_threshold=30.0)
    assert compare(features(a), features(b), strict).outcome == "possible"


def test_bpjs_is_strong_evidence_but_never_a_match_alone() -> None:
    a = patient("RSA", "1", "Rina Marlina", "1975-04-09", "female", bpjs="0001234567890")
    b = patient("RSB", "2", "Yohanes Kurniawan", "1960-11-30", "male", bpjs="0001234567890")
    result = score(a, b)
    assert {c.field: c.level for c in result.comparisons}["identifier"] == "agree"
    assert result.outcome != "match"
    c = patient("RSC", "3", "Rina Marlina", "1975-04-09", "female", bpjs="0001234567890")
    assert score(a, c).outcome == "match"


def test_different_valid_niks_never_auto_link() -> None:
    a = patient(
        "RSA",
        "1",
        "Budi Santoso",
        "1985-12-03",
        "male",
        nik=NIK_BUDI,
        district="337401",
        phone="081234567890",
    )
    b = patient(
        "RSB",
        "2",
        "Budi Santoso",
        "1985-12-03",
        "male",
        nik="3374010312850777",
        district="337401",
        phone="081234567890",
    )
    result = score(a, b)
    assert {c.field: c.level for c in result.comparisons}["nik"] == "disagree"
    assert result.outcome == "possible"
    lenient = MatchConfig(weights={**MatchConfig().weights, "nik": {"disagree": 0.0}})
    assert compare(features(a), features(b), lenient).reason == "nik-differs"


def test_placeholder_newborn_never_auto_links_even_on_the_mothers_nik() -> None:
    mother = patient("RSA", "1", "Sari Dewi", "1990-05-15", "female", nik=NIK_SARI, district="317101")
    baby = patient("RSA", "2", "Bayi Ny. Sari Dewi", "2026-11-28", "female", nik=NIK_SARI, district="317101")
    twin = patient("RSA", "3", "By. Ny. Sari Dewi", "2026-11-28", "male", nik=NIK_SARI, district="317101")
    assert score(mother, baby).outcome != "match"
    assert score(baby, twin).outcome != "match"
    assert score(baby, twin).reason == "placeholder"
    assert not any(k.startswith(("ny:", "nmd:")) for k in blocking_keys(features(baby)))


def test_blocking_keys_survive_typos_in_one_field() -> None:
    a = features(patient("RSA", "1", "Budi Santoso", "1985-12-03", "male", district="337401"))
    b = features(patient("RSB", "2", "Budi Santosa", "1985-03-12", "male", district="337401"))
    c = features(patient("RSC", "3", "Budi Santoso", "1958-12-03", "male"))
    assert blocking_keys(a) & blocking_keys(b)
    assert blocking_keys(a) & blocking_keys(c)


def test_probability_and_fields_report() -> None:
    a = patient("RSA", "1", "Budi Santoso", "1985-12-03", "male")
    b = patient("RSB", "2", "Budi Santoso", "1985-12-03", "female")
    result = score(a, b)
    assert "gender" in result.fields()["disagree"] and "name" in result.fields()["agree"]
    assert 0.0 < result.probability() < 1.0


def test_estimate_weights_learns_from_unlabelled_pairs() -> None:
    people = [
        patient(
            "RSA",
            str(i),
            f"Orang{chr(97 + i % 26)}{chr(97 + i // 26)} Santoso",
            f"19{50 + i % 40}-0{1 + i % 9}-1{i % 9}",
            "male" if i % 2 else "female",
            bpjs=f"{1000000 + i}",
            district="317101" if i % 3 else "337401",
        )
        for i in range(120)
    ]
    dups = [dict(p, id=p["id"] + "-dup") for p in people[:60]]
    records = [features(p) for p in people + dups]
    pairs = [(120 + i, i) for i in range(60)]
    trained = estimate_weights(records, pairs, random_pairs=5000, seed=1)
    # Agreement on a birth date is rarer among random pairs than agreement on the shared family name
    # district, so it weighs more; disagreement weighs less than zero.
    assert trained.weights["birthDate"]["exact"] > trained.weights["locality"]["district"] > 0
    assert trained.weights["identifier"]["agree"] > 0 > trained.weights["birthDate"]["disagree"]
    assert trained.match_threshold == MatchConfig().match_threshold


def test_twin_gate() -> None:
    one = patient(
        "RSA",
        "1",
        "Hasan Basri",
        "2001-06-01",
        "male",
        district="317101",
        phone="081211112222",
        line="Jl. Melati 3",
    )
    two = patient(
        "RSB",
        "2",
        "Husein Basri",
        "2001-06-01",
        "male",
        district="317101",
        phone="081211112222",
        line="Jl. Melati 3",
    )
    gated = score(one, two)
    assert gated.outcome != "match"
    loud = MatchConfig(twin_gate=False, weights={**MatchConfig().weights, "name": {"partial": 4.0}})
    assert compare(features(one), features(two), loud).outcome == "match"


def _household(name: str, mrn: str, birth: str = "2001-06-01", **kw: Any) -> dict[str, Any]:
    return patient(
        "RS" + mrn,
        mrn,
        name,
        birth,
        "male",
        district="317101",
        phone="081211112222",
        line="Jl. Melati 3",
        **kw,
    )


def test_twin_gate_sees_a_different_given_name_beside_a_shared_family_name() -> None:
    # Two of three tokens shared, so the names compare as close: still twins, never an automatic link.
    twin = score(_household("Rizki Nugroho Manurung", "1"), _household("Fikri Nugroho Manurung", "2"))
    assert twin.outcome == "possible" and twin.reason == "weak-demographics"
    # A typo in one name is not another name.
    typo = score(_household("Rizki Nugroho Manurung", "1"), _household("Rizky Nugroho Manurung", "2"))
    assert typo.outcome == "match"


def test_a_name_with_a_token_left_out_is_a_subset_not_a_different_name() -> None:
    a, b = features(_household("Rizki Pratama", "1")), features(_household("Pratama", "2"))
    assert dict(levels(a, b))["name"] == "subset"
    assert (
        dict(levels(features(_household("Nur Hayati", "1")), features(_household("Nurhayati", "2"))))["name"]
        == "exact"
    )


def test_a_mistyped_person_number_counts_unless_it_could_be_the_next_one_issued() -> None:
    # Different given names, same birth date and household: twins, unless their BPJS numbers agree up to
    # a typo that consecutive numbers cannot produce (a digit changed in the middle).
    one = _household("Wulan Nasution", "1", bpjs="0001234567890")
    typo = _household("Ani Nasution", "2", bpjs="0001234167890")
    consecutive = _household("Ani Nasution", "3", bpjs="0001234567891")
    assert score(one, typo).outcome == "match"
    assert score(one, consecutive).outcome == "possible"
    assert score(one, consecutive).reason == "weak-demographics"


def test_district_code_from_xad9() -> None:
    coded = patient("RSA", "1", "Budi Santoso", "1985-12-03", "male")
    coded["address"] = [{"use": "home", "line": ["Jl. Melati 3"], "district": "337401"}]
    f = features(coded)
    assert (f.district, f.city, f.province, f.city_text) == ("337401", "3374", "33", None)


def test_worth_comparing_keeps_every_candidate_of_a_small_block_and_the_likely_ones_of_a_crowd() -> None:
    few = {"a": ["nyd:S530|198|0312"], "b": ["tel:0812"]}
    assert worth_comparing(few, cap=8) == ["a", "b"]
    crowd: dict[str, list[str]] = {f"n{i:02d}": ["nyd:S530|198|0312"] for i in range(30)}
    crowd |= {f"r{i}": ["nyp:W200|1985|317101"] for i in range(2)}  # a rarer name key
    crowd["same"] = ["nyd:S530|198|0312", "n2y:B300|S530|1985"]  # two keys: the same person, likely
    crowd["phone"] = ["tel:081211112222"]  # an identifying key
    chosen = worth_comparing(crowd, cap=8)
    assert chosen[:2] == ["phone", "same"] and len(chosen) == 8
    assert {"r0", "r1"} <= set(chosen)  # then the rarest key's candidates


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ("Muhammad Hasan Basri", "Muhammad Husein Basri"),  # past the name nearly every boy carries
        ("Siti Nasution", "Rina Nasution"),  # a common first name is still a given name
    ],
)
def test_twin_gate_finds_the_given_name(one: str, two: str) -> None:
    twin = score(_household(one, "1"), _household(two, "2"))
    assert twin.outcome != "match"


def test_a_mistyped_family_name_is_not_another_person() -> None:
    typo = score(_household("Ani Hakim", "1"), _household("Ani Huaim", "2"))
    assert typo.outcome == "match"


def test_a_person_id_with_a_non_ascii_digit_is_compared_without_error() -> None:
    """'²' is a digit to str.isdigit but not to int(): two BPJS numbers one typo apart, one with a
    superscript two, once raised ValueError (the message failed internal-error)."""
    from hub.mpi.match import _typo_not_sequence, features

    a = patient("RSUD-A", "1", "Ani Lestari", "1990-01-01", "female", bpjs="0001234567891")
    b = patient("RS-B", "2", "Ani Lestari", "1990-01-01", "female", bpjs="000123456789\u00b2")
    assert _typo_not_sequence(features(a), features(b)) is True
    a["identifier"][-1]["value"] = "0001234567892"
    b["identifier"][-1]["value"] = "0001234567893"
    assert _typo_not_sequence(features(a), features(b)) is False  # consecutive numbers: not a typo
