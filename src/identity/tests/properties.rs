//! Properties over arbitrary input: no panics, idempotence, cell shape, fast path = parser.

use proptest::prelude::*;

use super::super::hash::is_sha256_hex;
use super::super::phone;
use super::*;

fn normalizers() -> Vec<Normalizer> {
    vec![
        plain(),
        with_country("US"),
        with_country("AR"),
        with_country("GB"),
    ]
}

/// Realistic-looking messy values as well as arbitrary Unicode.
fn messy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \\t]{0,2}[A-Za-zÀ-ÿ .,'_@+()-]{0,24}[ \\t]{0,2}",
        "[+0]{0,2}[0-9 ().-]{0,20}( ?(ext|x|#) ?[0-9]{1,4})?",
        "[0-9]{1,4}[-/. ][0-9]{1,2}[-/. ][0-9]{1,4}",
        "[a-zA-Z0-9._+-]{0,12}@[a-zA-Z0-9.-]{0,12}",
        "[0-9a-fA-F-]{30,40}",
        "\\PC{0,12}",
    ]
}

/// Everything a value can go through, on both channels; panics if anything is off.
fn exercise(n: &Normalizer, raw: &str) {
    for key in MatchKey::ALL {
        let normalized = n.normalize(key, raw);
        let cell = n.cell(key, raw);
        assert_eq!(normalized.is_ok(), cell.is_ok(), "{key} {raw:?}");
        if let Err(r) = &normalized {
            assert!(
                Rejection::ALL_REASONS.contains(&r.reason()),
                "{key}: unlisted reason {r}"
            );
            assert_eq!(normalized, cell.clone().map(|_| unreachable!()));
        }
        if let Ok(v) = &normalized {
            assert!(
                !v.is_empty(),
                "{key} {raw:?}: an accepted value is never empty"
            );
        }
        if let Ok(c) = &cell {
            if key.is_hashed() {
                assert!(
                    is_sha256_hex(c) && !c.bytes().any(|b| b.is_ascii_uppercase()),
                    "{key} {raw:?}: {c}"
                );
            } else {
                assert_eq!(
                    Ok(c),
                    normalized.as_ref(),
                    "{key}: clear cells are the value"
                );
            }
        }
    }
    for key in UserDataKey::ALL {
        let normalized = n.normalize_user_data(key, raw);
        let cell = n.user_data_cell(key, raw);
        assert_eq!(normalized.is_ok(), cell.is_ok(), "{key} {raw:?}");
        if let Err(r) = &normalized {
            assert!(
                Rejection::ALL_REASONS.contains(&r.reason()),
                "{key}: unlisted reason {r}"
            );
        }
        if let (Ok(c), true) = (&cell, key.is_hashed()) {
            assert!(is_sha256_hex(c) && !c.bytes().any(|b| b.is_ascii_uppercase()));
        }
    }
}

/// The normalized form normalizes to itself. PHONE is given back with its `+`: bare digits
/// could be a national number.
fn assert_idempotent(n: &Normalizer, raw: &str) {
    for key in MatchKey::ALL {
        let Ok(once) = n.normalize(key, raw) else {
            continue;
        };
        let again = if key == MatchKey::Phone && !is_sha256_hex(&once) {
            format!("+{once}")
        } else {
            once.clone()
        };
        assert_eq!(n.normalize(key, &again), Ok(once.clone()), "{key} {raw:?}");
    }
    if let Ok(once) = n.normalize_user_data(UserDataKey::Db, raw) {
        assert_eq!(
            n.normalize_user_data(UserDataKey::Db, &once),
            Ok(once.clone())
        );
    }
}

proptest! {
    #[test]
    fn no_key_panics_on_arbitrary_unicode_and_cells_are_64_lowercase_hex_or_clear(raw in messy()) {
        for n in normalizers() {
            exercise(&n, &raw);
        }
    }

    #[test]
    fn normalization_is_idempotent(raw in messy()) {
        for n in normalizers() {
            assert_idempotent(&n, &raw);
        }
    }

    #[test]
    fn no_key_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let raw = String::from_utf8_lossy(&bytes);
        exercise(&plain(), &raw);
        exercise(&with_country("US"), &raw);
    }

    #[test]
    fn the_phone_fast_path_gives_the_parser_s_answer(
        plus in prop_oneof!["", "\\+", "00"],
        code in prop::sample::select(vec!["", "1", "44", "54", "49", "39", "33", "34", "55", "52", "91", "61", "81", "86", "7", "351", "353", "598", "971"]),
        rest in "[0-9]{0,14}",
        sep in prop_oneof!["", " ", "-"],
        region in prop::sample::select(vec![None, Some("US"), Some("GB"), Some("AR"), Some("DE"), Some("IT"), Some("FR"), Some("BR"), Some("MX"), Some("IN"), Some("ES"), Some("AU"), Some("JP"), Some("CN"), Some("RU"), Some("CA")]),
    ) {
        let raw = format!("{plus}{code}{sep}{rest}");
        let region = region.and_then(phone::Region::new);
        let mut fast = String::new();
        let mut slow = String::new();
        let a = phone::normalize_into(&raw, region.as_ref(), &mut fast).map(|()| fast);
        let b = phone::normalize_slow(&raw, region.as_ref(), &mut slow).map(|()| slow);
        prop_assert_eq!(a, b, "{:?} via fast path: {}", raw, phone::takes_fast_path(&raw, region.as_ref()));
    }
}

#[test]
fn the_fast_path_is_taken_for_common_shapes() {
    let us = phone::Region::new("us");
    let gb = phone::Region::new("gb");
    assert!(phone::takes_fast_path("+1 650 555 1212", None));
    assert!(phone::takes_fast_path("(650) 555-1212", us.as_ref()));
    assert!(phone::takes_fast_path("+44 20 7946 0958", None));
    assert!(phone::takes_fast_path("20 7946 0958", gb.as_ref()));
    assert!(phone::takes_fast_path("1 650 555 1212", us.as_ref()));
    // Trunk prefixes and complex national-prefix rules go through the parser.
    assert!(!phone::takes_fast_path("020 7946 0958", gb.as_ref()));
    assert!(!phone::takes_fast_path("+54 9 11 2345-6789", None));
}

/// The long fuzz run: `PROPTEST_CASES=2000000 cargo test --release --lib identity::tests::
/// properties::fuzz -- --ignored --nocapture` (see `scripts/fuzz-identity.sh`).
#[test]
#[ignore = "long: run with PROPTEST_CASES set, see scripts/fuzz-identity.sh"]
fn fuzz_every_key_of_both_apis_with_arbitrary_bytes() {
    use proptest::test_runner::{Config, TestRunner};
    let config = Config::default(); // honours PROPTEST_CASES
    let cases = config.cases;
    let started = std::time::Instant::now();
    let normalizers = normalizers();
    let mut runner = TestRunner::new(config);
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        messy().prop_map(String::into_bytes),
    ];
    runner
        .run(&bytes, |bytes| {
            let raw = String::from_utf8_lossy(&bytes);
            for n in &normalizers {
                exercise(n, &raw);
                assert_idempotent(n, &raw);
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz: {cases} cases x {} normalizers x 27 keys, no panic, in {:.1?}",
        normalizers.len(),
        started.elapsed()
    );
}
