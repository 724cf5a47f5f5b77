//! Constructing a Normalizer, and the contract of its methods.

use super::*;

#[test]
fn a_default_country_may_be_given_as_code_alpha_3_or_name() {
    for cc in ["AR", "ar", "ARG", "Argentina", " argentina "] {
        assert_eq!(
            Normalizer::new(Some(cc)).unwrap().default_country(),
            Some("ar"),
            "{cc}"
        );
    }
    assert_eq!(
        Normalizer::new(Some("UK")).unwrap().default_country(),
        Some("gb")
    );
}

#[test]
fn an_unknown_default_country_is_refused_and_a_blank_one_means_none() {
    assert!(Normalizer::new(Some("Narnia")).is_err());
    assert!(Normalizer::new(Some("XX")).is_err());
    assert_eq!(Normalizer::new(Some("  ")).unwrap().default_country(), None);
    assert_eq!(Normalizer::new(None).unwrap().default_country(), None);
}

#[test]
fn a_normalizer_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Normalizer>();
}

#[test]
fn cell_into_appends_and_leaves_the_buffer_untouched_on_rejection() {
    let n = plain();
    let mut out = String::from("row:");
    n.cell_into(MatchKey::Email, "Mary@Example.com", &mut out)
        .unwrap();
    assert_eq!(out, format!("row:{}", sha256_hex(b"mary@example.com")));
    assert_eq!(
        n.cell_into(MatchKey::Email, "nope", &mut out),
        Err(Rejection::Invalid("no @"))
    );
    assert_eq!(out, format!("row:{}", sha256_hex(b"mary@example.com")));
    let mut out = String::from("x");
    assert!(n.normalize_into(MatchKey::Fn, "123", &mut out).is_err());
    assert_eq!(out, "x");
}

#[test]
fn a_pre_hashed_value_is_not_hashed_again() {
    let n = plain();
    let hashed = sha256_hex(b"mary@example.com");
    assert_eq!(
        n.cell(MatchKey::Email, &hashed.to_uppercase()),
        Ok(hashed.clone())
    );
    assert_eq!(
        n.user_data_cell(UserDataKey::Db, &hashed),
        Ok(hashed.clone())
    );
    // An MD5 is not a SHA-256: it is normalized like any value (and rejected as an email).
    assert_eq!(
        n.cell(MatchKey::Email, "2a6a84e9e44441afbd75cc19ce28be37"),
        Err(Rejection::Invalid("no @"))
    );
}

#[test]
fn an_empty_value_is_never_sent_as_the_hash_of_nothing() {
    let n = plain();
    let empty_hash = sha256_hex(b"");
    for key in MatchKey::ALL {
        for raw in ["", " ", "\t\r\n", "\u{FEFF}"] {
            assert_eq!(n.cell(key, raw), Err(Rejection::Empty), "{key} {raw:?}");
        }
        assert_ne!(n.cell(key, "-").ok(), Some(empty_hash.clone()));
    }
    for key in UserDataKey::ALL {
        assert_eq!(n.user_data_cell(key, " "), Err(Rejection::Empty), "{key}");
    }
}

#[test]
fn external_id_is_the_same_value_on_both_channels() {
    let n = plain();
    for raw in ["CUST-42", " 42 ", "AbC"] {
        assert_eq!(
            n.cell(MatchKey::ExternId, raw),
            n.user_data_cell(UserDataKey::ExternalId, raw)
        );
    }
}

#[test]
fn rejection_reasons_are_listed_once_and_display_as_their_reason() {
    let mut reasons = Rejection::ALL_REASONS.to_vec();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), Rejection::ALL_REASONS.len());
    assert_eq!(Rejection::Empty.to_string(), "empty");
    assert_eq!(Rejection::Invalid("no @").to_string(), "no @");
}
