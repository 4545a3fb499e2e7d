"""The fast paths of a read against their references, on random input: the lean entry
decoders against ldap3's own decoding, and normalise_dn's plain-DN shortcut against the
general normalisation.

:func:`connectors.ldap.decoding.decode_entry` and :class:`connectors.ldap.projection.Projection`
walk the BER of a searchResEntry themselves (a full read spends most of its time there). Here
hypothesis builds entries (multi-valued, binary and non-ASCII values, empty values and empty
attributes, long values, names in any case, ranged names) and encodes them with every length
form BER allows (short, long, non-minimal long as Active Directory sends them); both decoders
must give what ldap3's decoder gives, or decline (None) where the general path takes over.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ldap3.operation.search import search_result_entry_response_to_dict_fast
from ldap3.utils.asn1 import decode_message_fast

from connectors.base import SourceError
from connectors.ldap.decoding import decode_entry, id_decoder, lowered
from connectors.ldap.dn import _normalised, normalise_dn
from connectors.ldap.projection import Projection
from connectors.ldap.session import _PagingGuard

WANTED = ["entryUUID", "modifyTimestamp", "mail", "givenName", "sn", "displayName", "cn",
          "member"]
OTHERS = ["objectGUID", "objectSid", "jpegPhoto", "description", "member;range=0-1499",
          "x-unrequested"]


def length(n: int, form: int) -> bytes:
    """A BER length: form 0 minimal, 1 long form even when short would do, 2 four bytes."""
    if form == 0 and n < 0x80:
        return bytes([n])
    if form == 2:
        return b"\x84" + n.to_bytes(4, "big")
    size = max(1, (n.bit_length() + 7) // 8)
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def tlv(tag: int, body: bytes, form: int) -> bytes:
    return bytes([tag]) + length(len(body), form) + body


values = st.one_of(
    st.text(max_size=20).map(str.encode),                          # non-ASCII included
    st.binary(max_size=20),                                        # SIDs, photos
    st.binary(min_size=120, max_size=300),                         # long forms
    st.just(b""),
    st.builds(lambda u: u.bytes_le, st.uuids()),                   # objectGUID
    st.builds(lambda u: str(u).encode(), st.uuids()),              # entryUUID
)


@st.composite
def entries(draw):
    names = draw(st.lists(st.sampled_from(WANTED + OTHERS), unique_by=str.lower, max_size=10))
    names = [draw(st.sampled_from([n, n.lower(), n.upper()])) for n in names]
    attributes = [(name, draw(st.lists(values, max_size=4))) for name in names]
    forms = st.integers(0, 2)
    body = b"".join(
        tlv(0x30, tlv(0x04, name.encode(), draw(forms))
            + tlv(0x31, b"".join(tlv(0x04, v, draw(forms)) for v in vals), draw(forms)),
            draw(forms))
        for name, vals in attributes)
    dn = draw(st.text(min_size=1, max_size=40)).encode()
    message_id = draw(st.integers(1, 2 ** 31 - 1))
    entry = tlv(0x64, tlv(0x04, dn, draw(forms)) + tlv(0x30, body, draw(forms)), draw(forms))
    mid = message_id.to_bytes((message_id.bit_length() + 8) // 8, "big")
    return tlv(0x30, tlv(0x02, mid, 0) + entry, draw(forms)), message_id


def ldap3_decoding(message: bytes):
    payload = decode_message_fast(message)["payload"]
    entry = search_result_entry_response_to_dict_fast(payload, None, None, False)
    return entry["dn"], lowered(entry["raw_attributes"])


@settings(max_examples=400, deadline=None)
@given(entries())
def test_entry_decoder_gives_what_ldap3_gives(entry):
    message, message_id = entry
    dn, attributes = ldap3_decoding(message)
    mid, ours = decode_entry(message)
    assert (mid, ours["dn"], ours["raw_attributes"]) == (message_id, dn, attributes)


@settings(max_examples=400, deadline=None)
@given(entries(), st.sampled_from(["entryUUID", "objectGUID"]))
def test_projection_gives_what_ldap3_and_from_attrs_give(entry, id_attribute):
    message, message_id = entry
    projection = Projection(WANTED + ["objectGUID", "objectSid"], id_attribute,
                            "modifyTimestamp")
    dn, attributes = ldap3_decoding(message)
    expected = projection.from_attrs(attributes)
    ours = projection(message)
    if ours is None:            # declined: the general path (Session.search) takes it
        mid, entry = decode_entry(message)
        assert projection.from_attrs(entry["raw_attributes"]) == expected
        return
    assert ours == (message_id, dn.encode(), dn, expected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(WANTED), st.lists(values, min_size=1, max_size=3)),
                unique_by=lambda a: a[0], max_size=8))
def test_projection_takes_minimal_encodings_itself(attributes):
    body = b"".join(tlv(0x30, tlv(0x04, name.encode(), 0)
                        + tlv(0x31, b"".join(tlv(0x04, v, 0) for v in vals), 0), 0)
                    for name, vals in attributes)
    message = tlv(0x30, tlv(0x02, b"\x05", 0)
                  + tlv(0x64, tlv(0x04, b"cn=x", 0) + tlv(0x30, body, 0), 0), 0)
    projection = Projection(WANTED, "entryUUID", "modifyTimestamp")
    assert projection(message) is not None


def test_projection_follows_the_record_rules():
    projection = Projection(["mail", "cn", "objectGUID", "uSNChanged", "jpegPhoto"],
                            "objectGUID", "uSNChanged")
    guid = uuid.uuid4().bytes_le
    attrs = {"mail": [b"a@x", b"b@x"], "cn": ["Zoë".encode()], "objectguid": [guid],
             "usnchanged": [b"42"], "jpegphoto": [b"\xff\xd8\xff"]}
    values, ident, stamp = projection.from_attrs(attrs)
    # several values -> a list; not UTF-8 -> left out; the id (a GUID) and the change
    # stamp are not text
    assert values == {"mail": ["a@x", "b@x"], "cn": "Zoë"}
    assert (ident, stamp) == (guid, b"42")


def test_projection_declines_other_messages():
    projection = Projection(["cn"], "entryUUID", "modifyTimestamp")
    done = tlv(0x30, tlv(0x02, b"\x07", 0) + tlv(0x65, b"\x0a\x01\x00\x04\x00\x04\x00", 0), 0)
    assert projection(done) is None
    truncated = tlv(0x30, tlv(0x02, b"\x07", 0) + tlv(0x64, tlv(0x04, b"cn=a", 0)
                                                       + tlv(0x30, b"", 0), 0), 0)[:-3]
    assert projection(truncated) is None


dn_text = st.text(alphabet=st.sampled_from(list("aZ09 =,+\\\"#;<>é\tx-.")), max_size=30)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(dn_text, st.lists(st.tuples(st.sampled_from(["cn", "OU", " dc", "uid "]),
                                             dn_text), min_size=1, max_size=4)
                 .map(lambda rdns: ",".join(f"{t}={v}" for t, v in rdns))))
def test_the_plain_dn_shortcut_normalises_as_the_general_way(dn):
    try:
        expected = _normalised(dn)
    except Exception as exc:                      # not a DN: the shortcut must not take it
        with pytest.raises(type(exc)):
            normalise_dn(dn)
        return
    assert normalise_dn(dn) == expected


_UUID_TEXT = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def reference_decode_id(attribute: str, raw: bytes) -> str:
    """decode_id as it was before id_decoder: the obvious path, one step at a time."""
    import re
    if attribute.lower() in ("objectguid", "ms-ds-consistencyguid"):
        if len(raw) != 16:
            raise SourceError("not 16 bytes")
        return str(uuid.UUID(bytes_le=bytes(raw)))
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.hex()
    if re.fullmatch(_UUID_TEXT, text):
        return text
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


raw_ids = st.one_of(
    st.builds(lambda u: str(u).encode(), st.uuids()),                       # entryUUID
    st.builds(lambda u, f: f(str(u)).encode(), st.uuids(),
              st.sampled_from([str.upper, " {} ".format, "{{{}}}".format, lambda t: t + "\n",
                               lambda t: t.replace("-", "")])),
    st.builds(lambda u: u.bytes_le, st.uuids()),                            # objectGUID
    st.binary(max_size=40), st.text(max_size=40).map(str.encode))


@settings(max_examples=500, deadline=None)
@given(raw_ids, st.sampled_from(["entryUUID", "objectGUID", "ms-DS-ConsistencyGuid", "uid"]))
def test_the_id_decoder_decodes_as_the_obvious_way(raw, attribute):
    try:
        expected = reference_decode_id(attribute, raw)
    except SourceError:
        with pytest.raises(SourceError):
            id_decoder(attribute)(raw)
        return
    assert id_decoder(attribute)(raw) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from([b"cn=a", b"cn=b", b"cn=c", "cn=d", b"cn=e"]),
                         max_size=8), max_size=6))
def test_the_paging_guard_counts_a_page_as_entry_by_entry(pages):
    one_by_one, per_page = _PagingGuard("h", "w", 3), _PagingGuard("h", "w", 3)
    for page in pages:
        for dn in page:
            one_by_one.entry(dn)
        per_page.entries(page)
        assert (per_page.new, per_page.repeated, per_page.seen) == \
            (one_by_one.new, one_by_one.repeated, one_by_one.seen)
