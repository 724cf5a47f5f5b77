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

/// The normalized form normalizes to itself, PHONE's bare digits included (`normalize --key
/// PHONE` run on its own output changes nothing).
fn assert_idempotent(n: &Normalizer, raw: &str) {
    for key in MatchKey::ALL {
        let Ok(once) = n.normalize(key, raw) else {
            continue;
        };
        assert_eq!(n.normalize(key, &once), Ok(once.clone()), "{key} {raw:?}");
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
        // The last codes and regions are those whose national-prefix pattern is compiled to a
        // trie (phone_pattern.rs), besides Argentina.
        code in prop::sample::select(vec!["", "1", "44", "54", "49", "39", "33", "34", "55", "52", "91", "61", "81", "86", "7", "351", "353", "598", "971", "82", "57", "591", "506", "423", "375", "370", "352", "298"]),
        rest in "[0-9]{0,14}",
        sep in prop_oneof!["", " ", "-"],
        region in prop::sample::select(vec![None, Some("US"), Some("GB"), Some("AR"), Some("DE"), Some("IT"), Some("FR"), Some("BR"), Some("MX"), Some("IN"), Some("ES"), Some("AU"), Some("JP"), Some("CN"), Some("RU"), Some("CA"), Some("KR"), Some("CO"), Some("BO"), Some("CR"), Some("LI"), Some("BY"), Some("LT"), Some("LU"), Some("FO"), Some("CX"), Some("CC")]),
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

/// Argentine area codes: the demo generator's, short and long ones from the metadata's `15`
/// pattern, prefixes of them and near misses.
const AR_AREAS: [&str; 24] = [
    "11", "351", "341", "261", "381", "221", "220", "2202", "223", "2293", "2966", "297", "3543",
    "3833", "3894", "348", "2", "3", "1", "9", "12", "3548", "2324", "379",
];

/// Argentine-shaped phone values: `[+54|0054|54] [9] [0] area [15] local`, each part optional
/// and chosen at random, with random separators; sometimes with junk around or instead.
fn argentine_phone() -> impl Strategy<Value = String> {
    let sep = || prop::sample::select(vec!["", "", " ", "-", ".", "/", " - "]);
    let shaped = (
        prop::sample::select(vec![
            "", "", "+54", "+54", "0054", "54", "+ 54", "00 54", "+054", "+", "00", "000",
        ]),
        sep(),
        prop::sample::select(vec!["", "", "9", "0"]),
        sep(),
        prop::sample::select(vec!["", "", "0", "00", "15"]),
        (
            prop::sample::select(AR_AREAS.to_vec()),
            "[1-9][0-9]{0,3}",
            any::<bool>(),
            any::<bool>(),
        ),
        sep(),
        prop::sample::select(vec!["", "", "15", "1", "5", "0", "150"]),
        sep(),
        ("[0-9]{6,8}", "[0-9]{0,10}", any::<bool>()),
        prop::sample::select(vec!["", "", "", " ext. 12", "x3", "#5", "  ", "a", "(0)"]),
    )
        .prop_map(
            |(
                intl,
                s1,
                nine,
                s2,
                trunk,
                (area, random_area, use_random, parens),
                s3,
                fifteen,
                s4,
                (local, random_local, use_random_local),
                tail,
            )| {
                let area = if use_random {
                    random_area.as_str()
                } else {
                    area
                };
                let area = if parens {
                    format!("({area})")
                } else {
                    area.to_owned()
                };
                let local = if use_random_local {
                    random_local
                } else {
                    local
                };
                let split = local.len() / 2;
                format!(
                    "{intl}{s1}{nine}{s2}{trunk}{area}{s3}{fifteen}{s4}{}-{}{tail}",
                    &local[..split],
                    &local[split..]
                )
            },
        );
    prop_oneof![
        8 => shaped,
        2 => "[+]?[0-9]{1,16}",
        1 => "(\\+54|0054|0)?[0-9 ]{0,14}",
        1 => prop::sample::select(vec!["sin teléfono", "12345", "no tiene", "-", "0", "00", "+", "15", "011", "+54", "+549", "0054"]).prop_map(str::to_owned),
        1 => messy(),
    ]
}

fn argentine_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(argentine_cases()))]

    /// 10,000 Argentine-shaped values per run (`PROPTEST_CASES` for more): the fast path
    /// (Argentina's `15` pattern compiled to a trie) never disagrees with the parser, output
    /// or rejection.
    #[test]
    fn the_phone_fast_path_gives_the_parser_s_answer_for_argentine_numbers(
        raw in argentine_phone(),
        region in prop_oneof![6 => Just(Some("AR")), 1 => Just(None), 1 => Just(Some("US")), 1 => Just(Some("UY"))],
    ) {
        let region = region.and_then(phone::Region::new);
        let mut fast = String::new();
        let mut slow = String::new();
        let a = phone::normalize_into(&raw, region.as_ref(), &mut fast).map(|()| fast);
        let b = phone::normalize_slow(&raw, region.as_ref(), &mut slow).map(|()| slow);
        prop_assert_eq!(a, b, "{:?} via fast path: {}", raw, phone::takes_fast_path(&raw, region.as_ref()));
    }
}

#[test]
fn argentine_examples_give_the_parser_s_answer() {
    let ar = phone::Region::new("AR");
    let ar = ar.as_ref();
    let ok = |s: &str| Ok(s.to_owned());
    let cases: [(&str, Result<String, Rejection>, bool); 24] = [
        // (raw, expected, takes the fast path)
        ("+54 9 11 4555-1234", ok("5491145551234"), true),
        ("+5491145551234", ok("5491145551234"), true),
        ("0054 9 11 45551234", ok("5491145551234"), true),
        ("011 45551234", ok("541145551234"), true),
        ("(11) 4555-1234", ok("541145551234"), true),
        ("1145551234", ok("541145551234"), true),
        ("0351 4555123", ok("543514555123"), true),
        ("(351) 455-5123", ok("543514555123"), true),
        ("+54 9 351 455-5123", ok("5493514555123"), true),
        ("0054 9 221 4555123", ok("5492214555123"), true),
        ("5491145551234", ok("5491145551234"), true),
        ("+54 011 4555-1234", ok("541145551234"), true),
        (
            "00 11 4555 1234",
            Err(Rejection::Invalid("not a possible phone number")),
            false,
        ),
        // The mobile `15` after the area code: the transform rule, left to the parser.
        ("011 15 4555-1234", ok("5491145551234"), false),
        ("11 15 4555-1234", ok("5491145551234"), false),
        ("0351 15 455-5123", ok("5493514555123"), false),
        ("+54 351 15 455 5123", ok("5493514555123"), false),
        // A `15` that is not after an area code of the pattern is kept as digits.
        ("0 15 4555 1234", ok("541545551234"), true),
        (
            "sin teléfono",
            Err(Rejection::Invalid("contains letters")),
            false,
        ),
        (
            "12345",
            Err(Rejection::Invalid("not a possible phone number")),
            true,
        ),
        (
            "0",
            Err(Rejection::Invalid("not a possible phone number")),
            false,
        ),
        (
            "+54",
            Err(Rejection::Invalid("not a possible phone number")),
            false,
        ),
        (
            "011",
            Err(Rejection::Invalid("not a possible phone number")),
            true,
        ),
        (
            "4555-1234",
            Err(Rejection::Invalid("not a possible phone number")),
            true,
        ),
    ];
    for (raw, expected, fast) in cases {
        let mut out = String::new();
        let got = phone::normalize_into(raw, ar, &mut out).map(|()| out);
        let mut out = String::new();
        let parser = phone::normalize_slow(raw, ar, &mut out).map(|()| out);
        assert_eq!(got, parser, "{raw:?}: fast path and parser disagree");
        assert_eq!(got, expected, "{raw:?}");
        assert_eq!(phone::takes_fast_path(raw, ar), fast, "{raw:?}");
    }
}

/// Every phone of the demo generator's Argentine mix that is a number takes the fast path.
#[test]
fn the_demo_generator_s_argentine_phones_take_the_fast_path() {
    let ar = phone::Region::new("AR");
    let mut numbers = 0;
    for id in 1..=2000 {
        let Some(raw) = crate::demo::customer(7, id).phone else {
            continue;
        };
        if raw == "sin teléfono" || raw == "12345" {
            continue;
        }
        numbers += 1;
        assert!(phone::takes_fast_path(&raw, ar.as_ref()), "{raw:?}");
    }
    assert!(numbers > 1500, "{numbers}");
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
    assert!(!phone::takes_fast_path("+81 3-1234-5678", None));
    // Argentina's pattern is compiled to a trie: only the `15` transform goes to the parser.
    assert!(phone::takes_fast_path("+54 9 11 2345-6789", None));
    assert!(!phone::takes_fast_path("+54 11 15 2345-6789", None));
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
