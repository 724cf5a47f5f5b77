//! Every golden of Meta's documents (`reference/meta_doc_goldens.tsv`), copied as literals.
//! Where the document gives no raw example, the raw value is the documented normalized form
//! written the way a CRM would hold it.

use super::*;

/// (channel key, raw, normalized, sha256) — key names as in the TSV.
const GOLDENS: &[(&str, &str, &str, &str)] = &[
    (
        "EMAIL",
        "mary@example.com",
        "mary@example.com",
        "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79",
    ),
    (
        "PHONE",
        "+1 555 987 6543",
        "15559876543",
        "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e",
    ),
    (
        "em",
        "John_Smith@gmail.com",
        "john_smith@gmail.com",
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
    ),
    (
        "ph",
        "(650)555-1212",
        "16505551212",
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
    ),
    (
        "fn",
        "Mary",
        "mary",
        "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec",
    ),
    (
        "fn",
        "Valéry",
        "valéry",
        "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c",
    ),
    (
        "ln",
        "정",
        "정",
        "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14",
    ),
    (
        "db",
        "1997-02-16",
        "19970216",
        "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c",
    ),
    (
        "country",
        "United States",
        "us",
        "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621",
    ),
];

#[test]
fn every_golden_of_meta_s_documents_normalizes_and_hashes_as_documented() {
    // The CAPI phone example `(650)555-1212` is a US national number: the system's default
    // country supplies the `1`.
    let n = with_country("US");
    for &(key, raw, normalized, sha) in GOLDENS {
        if let Ok(key) = key.parse::<MatchKey>() {
            assert_eq!(
                n.normalize(key, raw).as_deref(),
                Ok(normalized),
                "{key} {raw}"
            );
            assert_eq!(n.cell(key, raw).as_deref(), Ok(sha), "{key} {raw}");
        } else {
            let key: UserDataKey = key.parse().unwrap();
            assert_eq!(
                n.normalize_user_data(key, raw).as_deref(),
                Ok(normalized),
                "{key} {raw}"
            );
            assert_eq!(
                n.user_data_cell(key, raw).as_deref(),
                Ok(sha),
                "{key} {raw}"
            );
        }
    }
}

#[test]
fn every_golden_holds_on_the_other_channel_too() {
    let n = with_country("US");
    let twin = |key: &str| -> (MatchKey, UserDataKey) {
        match key {
            "EMAIL" | "em" => (MatchKey::Email, UserDataKey::Em),
            "PHONE" | "ph" => (MatchKey::Phone, UserDataKey::Ph),
            "fn" => (MatchKey::Fn, UserDataKey::Fn),
            "ln" => (MatchKey::Ln, UserDataKey::Ln),
            "country" => (MatchKey::Country, UserDataKey::Country),
            other => panic!("no twin for {other}"),
        }
    };
    for &(key, raw, _, sha) in GOLDENS.iter().filter(|g| g.0 != "db") {
        let (ca, capi) = twin(key);
        assert_eq!(n.cell(ca, raw).as_deref(), Ok(sha), "{ca} {raw}");
        assert_eq!(
            n.user_data_cell(capi, raw).as_deref(),
            Ok(sha),
            "{capi} {raw}"
        );
    }
}

#[test]
fn the_documented_birth_date_golden_holds_for_every_accepted_date_format() {
    let n = plain();
    for raw in [
        "1997-02-16",
        "19970216",
        "1997/02/16",
        "1997.2.16",
        "1997-02-16T00:00:00Z",
        "1997-02-16 00:00:00+00",
    ] {
        assert_eq!(
            n.user_data_cell(UserDataKey::Db, raw).as_deref(),
            Ok("01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"),
            "{raw}"
        );
    }
}

#[test]
fn the_documented_phone_golden_holds_for_national_and_international_spellings() {
    let sha = "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e";
    let us = with_country("US");
    for raw in [
        "+15559876543",
        "15559876543",
        "(555) 987-6543",
        "555.987.6543",
        "001 555 987 6543",
    ] {
        assert_eq!(us.cell(MatchKey::Phone, raw).as_deref(), Ok(sha), "{raw}");
    }
    // From a system in Argentina, only the international forms are this US number.
    let ar = with_country("AR");
    for raw in ["+1 555 987 6543", "00 1 555 987 6543"] {
        assert_eq!(ar.cell(MatchKey::Phone, raw).as_deref(), Ok(sha), "{raw}");
    }
}
