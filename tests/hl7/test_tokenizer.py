from hypothesis import given
from hypothesis import strategies as st

from hub.hl7 import EXPLICIT_NULL, Encoding, HeaderError, escape, parse, peek_header, unescape
from hub.hl7._header import decode, patient_key

ORU = (
    "MSH|^~\\&|LAB|RSUD^2.16.360.1^ISO|HUB|MOH|20261101083000+0700||ORU^R01^ORU_R01|C123|P|2.5.1\r"
    "PID|1||MRN1^^^RSUD^MR~3171234567890001^^^KEMKES^NNIDN||Santoso^Budi^^^^^L||19800101|M\r"
    "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|12-16|N|||F\r"
    "OBX|2|FT|NOTE^Note||line one\\.br\\line \\F\\two\\S\\x\\T\\y\\R\\z\\E\\|||||F\r"
)


def test_fields_components_repetitions() -> None:
    m = parse(ORU)
    pid = m.first("PID")
    assert pid is not None
    assert pid.get(3) == "MRN1"
    assert pid.get(3, 4) == "RSUD"
    assert pid.get(3, 1, repetition=1) == "3171234567890001"
    assert pid.get(3, 5, repetition=1) == "NNIDN"
    assert pid.get(5, 2) == "Budi"
    assert pid.get(99) == ""
    assert m.get("MSH-9.3") == "ORU_R01"
    assert m.get("MSH-4.2") == "2.16.360.1"
    assert m.get("PID-3[1].4") == "KEMKES"
    assert m.msh.get(1) == "|" and m.msh.get(2) == "^~\\&"
    assert len(m.all("OBX")) == 2


def test_escapes_unescaped_after_split() -> None:
    m = parse(ORU)
    obx = m.all("OBX")[1]
    assert obx.get(5) == "line one\nline |two^x&y~z\\"


def test_line_endings_and_bom_are_equivalent() -> None:
    crlf = "\ufeff" + ORU.replace("\r", "\r\n")
    lf = ORU.replace("\r", "\n")
    for text in (crlf, lf):
        m = parse(text)
        assert [s.name for s in m] == ["MSH", "PID", "OBX", "OBX"]
        assert m.all("OBX")[0].get(5) == "13.5"


def test_explicit_null_is_not_empty() -> None:
    m = parse('MSH|^~\\&|A|B|C|D|||ADT^A08|1|P|2.5\rPID|1||X^^^A||""|')
    pid = m.first("PID")
    assert pid is not None
    assert pid.is_null(5) and pid.raw(5) == EXPLICIT_NULL
    assert not pid.is_null(6)


def test_hex_and_formatting_escapes() -> None:
    assert unescape("caf\\XC3A9\\") == "café"
    assert unescape("a\\H\\b\\N\\c") == "abc"
    assert unescape("broken \\Q escape") == "broken \\Q escape"


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=60)
)
def test_escape_round_trip(text: str) -> None:
    assert unescape(escape(text)) == text


@given(
    st.lists(
        st.lists(
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8), min_size=1, max_size=4
        ),
        min_size=1,
        max_size=3,
    )
)
def test_any_value_survives_encoding(reps: list[list[str]]) -> None:
    """Whatever text goes into a repetition/component grid comes back out of the tokenizer unchanged."""
    enc = Encoding()
    field = "~".join("^".join(escape(c, enc).replace("\n", "\\.br\\") for c in comps) for comps in reps)
    m = parse(f"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\rZZZ|{field}\r")
    seg = m.first("ZZZ")
    assert seg is not None
    for r, comps in enumerate(reps):
        for c, value in enumerate(comps, start=1):
            expected = value.replace("\r\n", "\n").replace("\r", "\n")
            assert seg.get(1, c, repetition=r) == expected


def test_peek_header() -> None:
    h = peek_header(("\ufeff" + ORU).encode())
    assert h.sending_facility == "RSUD"
    assert h.message_type == "ORU^R01"
    assert h.message_structure == "ORU_R01"
    assert h.control_id == "C123"
    assert h.version == "2.5.1"
    assert not h.enhanced_mode


def test_peek_header_rejects_unreadable() -> None:
    cases = {
        b"hello world": "100",
        b"MSH|^~\\\\&|A|B|C|D|||ADT^A01|1|P|2.5\r": "102",  # corrupted MSH-2 (doubled escape)
        b"MSH|^~\\&|A|B|C|D|||ADT^A01||P|2.5\r": "101",  # no MSH-10
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|\r": "101",  # no version
        b"": "100",
    }
    for raw, code in cases.items():
        try:
            peek_header(raw)
        except HeaderError as exc:
            assert exc.code == code, (raw, exc)
        else:
            raise AssertionError(f"accepted {raw!r}")


def test_charsets() -> None:
    latin = "MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5||||||8859/1\rPID|1||X^^^A||Müller\r".encode("latin-1")
    h = peek_header(latin)
    assert decode(latin, h).endswith("Müller\r")
    utf = "MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||X^^^A||Müller\r".encode()
    assert "Müller" in decode(utf, peek_header(utf))


def test_patient_key() -> None:
    assert patient_key(ORU, Encoding()) == "MRN1^RSUD"
    assert patient_key("MSH|^~\\&|A\rOBX|1\r", Encoding()) is None
