//! Hand-written cases, at least 20 per key, each answered by the documented rule (see the
//! rule files for the decisions). Every case of `cross_impl_divergences.json` is here, marked
//! "divergence:".

use super::*;

const SHA_OF_MAIL: &str = "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE04294E576CA48E1CB0D7D6267";

const EMAIL: &[(&str, &str, Want)] = &[
    (
        "documented example",
        "mary@example.com",
        Is("mary@example.com"),
    ),
    (
        "documented CAPI example is lowercased",
        "John_Smith@gmail.com",
        Is("john_smith@gmail.com"),
    ),
    (
        "surrounding spaces are trimmed",
        "  Test@Example.COM  ",
        Is("test@example.com"),
    ),
    (
        "tabs and CRLF are trimmed",
        "\tmary@example.com\r\n",
        Is("mary@example.com"),
    ),
    (
        "a byte-order mark is trimmed",
        "\u{FEFF}mary@example.com",
        Is("mary@example.com"),
    ),
    (
        "a plus tag is kept",
        "Mary+ads@Example.com",
        Is("mary+ads@example.com"),
    ),
    (
        "dots in the local part are kept",
        "first.last@gmail.com",
        Is("first.last@gmail.com"),
    ),
    (
        "a trailing dot is not ours to remove",
        "a@b.com.",
        Is("a@b.com."),
    ),
    (
        "a dotless domain is not rejected",
        "user@localhost",
        Is("user@localhost"),
    ),
    ("a short address is kept", "a@b", Is("a@b")),
    (
        "an escaped @ in the local part",
        "a\\@b@c.d",
        Is("a\\@b@c.d"),
    ),
    ("apostrophes are kept", "f'o'o@bar.com", Is("f'o'o@bar.com")),
    (
        "non-ASCII capitals are lowercased",
        "ÉLODIE@EXAMPLE.FR",
        Is("élodie@example.fr"),
    ),
    (
        "NFD input is composed",
        "E\u{301}lodie@example.fr",
        Is("\u{e9}lodie@example.fr"),
    ),
    (
        "an internationalized domain is lowercased",
        "user@MÜNCHEN.de",
        Is("user@münchen.de"),
    ),
    ("no @", "mary.example.com", No("no @")),
    ("digits only", "1234", No("no @")),
    ("empty local part", "@example.com", No("empty local part")),
    ("a lone @", "@", No("empty local part")),
    ("empty domain", "mary@", No("empty domain")),
    (
        "a space in the local part",
        "mary @example.com",
        No("inner whitespace"),
    ),
    (
        "a space in the domain",
        "mary@exa mple.com",
        No("inner whitespace"),
    ),
    (
        "a quoted local part with a space",
        "\"a b\"@c.d",
        No("inner whitespace"),
    ),
    (
        "a no-break space inside",
        "mary\u{a0}@example.com",
        No("inner whitespace"),
    ),
    ("empty", "", No("empty")),
    (
        "divergence: null/blank is an empty cell, never sha256(\"\")",
        "   ",
        No("empty"),
    ),
    ("a zero-width space alone is empty", "\u{200B}", No("empty")),
    (
        "divergence: a pre-hashed value passes through lowercased",
        SHA_OF_MAIL,
        Is("b94d27b9934d3e08a52e52d7da7dabfac484efe04294e576ca48e1cb0d7d6267"),
    ),
];

#[test]
fn emails_are_trimmed_lowercased_and_rejected_when_not_plausibly_an_address() {
    check(&plain(), MatchKey::Email, EMAIL);
    check_user_data(&plain(), UserDataKey::Em, EMAIL);
}

/// Cases for a system whose default country is the US.
const PHONE_US: &[(&str, &str, Want)] = &[
    (
        "divergence: formatted with country code",
        "+1 (650) 555-1212",
        Is("16505551212"),
    ),
    (
        "CAPI documented example",
        "(650)555-1212",
        Is("16505551212"),
    ),
    ("dots", "650.555.1212", Is("16505551212")),
    ("national prefix 1", "1-650-555-1212", Is("16505551212")),
    ("already E.164 digits", "16505551212", Is("16505551212")),
    ("toll-free", "18005551234", Is("18005551234")),
    (
        "fictional 555 numbers are not range-checked",
        "+1 555 987 6543",
        Is("15559876543"),
    ),
    ("a UK number with +", "+44 20 7946 0958", Is("442079460958")),
    (
        "a UK number with 00",
        "0044 207 123 4567",
        Is("442071234567"),
    ),
    (
        "an Indian number with 00",
        "00919876543210",
        Is("919876543210"),
    ),
    (
        "the UK trunk zero in brackets is dropped",
        "+44 (0)20 7946 0958",
        Is("442079460958"),
    ),
    (
        "the US international prefix 011",
        "011 44 20 7946 0958",
        Is("442079460958"),
    ),
    ("+00 typo", "+001-800-555-1234", Is("18005551234")),
    (
        "an extension is dropped",
        "650 555 1212 ext. 123",
        Is("16505551212"),
    ),
    (
        "a short extension is dropped",
        "(650) 555-1212 x3",
        Is("16505551212"),
    ),
    ("symbols are removed", "@650*555*1212", Is("16505551212")),
    ("vanity letters", "+1-800-FLOWERS", No("contains letters")),
    ("a label", "Tel: 650 555 1212", No("contains letters")),
    ("letters only", "abc", No("contains letters")),
    (
        "a local number without area code",
        "555-1212",
        No("not a possible phone number"),
    ),
    (
        "too short",
        "+1 650 555 12",
        No("not a possible phone number"),
    ),
    (
        "too long",
        "+1 650 555 121212",
        No("not a possible phone number"),
    ),
    (
        "far too long",
        "1234567890123456789012345",
        No("not a possible phone number"),
    ),
    (
        "all zeros",
        "+0000000000",
        No("not a possible phone number"),
    ),
    (
        "unassigned country code",
        "+999 1234 5678",
        No("unknown country code"),
    ),
    ("a plus alone", "+", No("no digits")),
    ("dashes alone", "---", No("no digits")),
    ("Arabic-Indic digits", "٠١٢٣٤٥٦٧٨٩", No("non-ASCII digits")),
    ("empty", "", No("empty")),
    (
        "pre-hashed",
        "8A59780BB8CD2BA022BFA5BA2EA3B6E07AF17A7D8B30C1F9B3390E36F69019E4",
        Is("8a59780bb8cd2ba022bfa5ba2ea3b6e07af17a7d8b30c1f9b3390e36f69019e4"),
    ),
];

#[test]
fn phones_become_e164_digits_with_the_us_as_default_country() {
    check(&with_country("US"), MatchKey::Phone, PHONE_US);
    check_user_data(&with_country("US"), UserDataKey::Ph, PHONE_US);
}

#[test]
fn national_phone_numbers_take_the_system_s_default_country() {
    check(
        &with_country("GB"),
        MatchKey::Phone,
        &[
            (
                "London with trunk zero",
                "020 7946 0958",
                Is("442079460958"),
            ),
            ("mobile with trunk zero", "07700 900123", Is("447700900123")),
            (
                "already international",
                "+1 650 555 1212",
                Is("16505551212"),
            ),
            (
                "00 is international from the UK too",
                "00 1 650 555 1212",
                Is("16505551212"),
            ),
        ],
    );
    check(
        &with_country("IN"),
        MatchKey::Phone,
        &[("symbol and trunk zero", "@09432457768", Is("919432457768"))],
    );
    check(
        &with_country("AR"),
        MatchKey::Phone,
        &[
            ("Buenos Aires landline", "011 4321-5678", Is("541143215678")),
            (
                "international mobile with 9",
                "+54 9 11 2345-6789",
                Is("5491123456789"),
            ),
            (
                "stored with country code but no +",
                "5491123456789",
                Is("5491123456789"),
            ),
            // Argentine mobiles dialled nationally: trunk 0 + area code + 15 + number; in
            // E.164 the 15 goes and a 9 comes before the area code.
            (
                "Buenos Aires mobile, national",
                "011 15-2345-6789",
                Is("5491123456789"),
            ),
            (
                "Córdoba mobile, national",
                "0351 15 412-3456",
                Is("5493514123456"),
            ),
        ],
    );
}

#[test]
fn without_any_country_bare_digits_are_kept_and_a_formatted_national_number_is_rejected() {
    check(
        &plain(),
        MatchKey::Phone,
        &[
            (
                "formatted national",
                "(650) 555-1212",
                No("no country code"),
            ),
            ("trunk zero", "0351 456-7890", No("no country code")),
            (
                "too short to carry a code",
                "5551212",
                No("no country code"),
            ),
            ("leading zero", "03514567890", No("no country code")),
            (
                "digits only: the caller's country code",
                "6505551212",
                Is("6505551212"),
            ),
            (
                "Meta's example with a fictional area code",
                "15559876543",
                Is("15559876543"),
            ),
            (
                "international is fine",
                "+1 650 555 1212",
                Is("16505551212"),
            ),
        ],
    );
}

#[test]
fn bare_digits_that_form_a_valid_international_number_are_kept_before_the_default_country() {
    for country in ["AR", "US", "GB", "DE"] {
        check(
            &with_country(country),
            MatchKey::Phone,
            &[
                // Before: `5416505551212` under AR, another person's hash.
                ("Meta's example", "16505551212", Is("16505551212")),
                ("a UK number", "442079460958", Is("442079460958")),
                ("an Argentine mobile", "5491123456789", Is("5491123456789")),
            ],
        );
    }
    // Not a valid international number (+65 05551212, +351 4567890): national after all.
    check(
        &with_country("US"),
        MatchKey::Phone,
        &[("US national", "6505551212", Is("16505551212"))],
    );
    check(
        &with_country("AR"),
        MatchKey::Phone,
        &[("Córdoba landline", "3514567890", Is("543514567890"))],
    );
}

#[test]
fn a_national_number_takes_the_rows_own_country_before_the_default_one() {
    let cell = |n: &Normalizer, raw: &str, row_country: Option<&str>| {
        let mut out = String::new();
        n.row_cell_into(MatchKey::Phone, raw, row_country, &mut out)
            .map(|()| out)
    };
    let hashed = |digits: &str| Ok(sha256_hex(digits.as_bytes()));
    let ar = with_country("AR");
    assert_eq!(
        cell(&ar, "020 7946 0958", Some("United Kingdom")),
        hashed("442079460958")
    );
    assert_eq!(
        cell(&ar, "020 7946 0958", Some(" gb ")),
        hashed("442079460958")
    );
    assert_eq!(
        cell(&plain(), "0351 456-7890", Some("Argentina")),
        hashed("543514567890")
    );
    // A country nobody knows, or none, leaves the default country in charge.
    assert_eq!(
        cell(&ar, "0351 456-7890", Some("Narnia")),
        hashed("543514567890")
    );
    assert_eq!(cell(&ar, "0351 456-7890", None), hashed("543514567890"));
    // A number that carries its code ignores the row's country.
    assert_eq!(
        cell(&ar, "+1 650 555 1212", Some("GB")),
        hashed("16505551212")
    );
    assert_eq!(cell(&ar, "16505551212", Some("GB")), hashed("16505551212"));
    // The Conversions API path does the same with the event's country.
    assert_eq!(
        ar.event_user_data_cell(UserDataKey::Ph, "020 7946 0958", Some("GB")),
        hashed("442079460958")
    );
}

const NAMES: &[(&str, &str, Want)] = &[
    ("documented example", "Mary", Is("mary")),
    (
        "divergence: accents are kept in UTF-8",
        "Valéry",
        Is("valéry"),
    ),
    ("documented Korean example", "정", Is("정")),
    ("an apostrophe is dropped", "O'Brien", Is("obrien")),
    ("a hyphen is dropped", "Mary-Jane", Is("maryjane")),
    ("inner whitespace is dropped", "Anne Marie", Is("annemarie")),
    ("surrounding whitespace is dropped", "  John  ", Is("john")),
    ("digits are dropped", "John Smith1", Is("johnsmith")),
    ("a full stop is dropped", "Jr.", Is("jr")),
    ("NFD is composed", "Jose\u{301}", Is("jos\u{e9}")),
    ("Vietnamese", "Nguyễn", Is("nguyễn")),
    ("German", "Müller", Is("müller")),
    ("sharp s is not case-folded to ss", "Straße", Is("straße")),
    ("Polish capital", "ŁUKASZ", Is("łukasz")),
    ("Greek with final sigma", "ΣΊΣΥΦΟΣ", Is("σίσυφος")),
    ("Chinese", "李", Is("李")),
    ("Arabic", "محمد", Is("محمد")),
    ("Devanagari vowel signs are kept", "अनिल", Is("अनिल")),
    ("an emoji is dropped", "Mary 😀", Is("mary")),
    ("a zero-width space is dropped", "Ma\u{200B}ry", Is("mary")),
    ("digits only", "1234", No("no letters")),
    ("punctuation only", "---", No("no letters")),
    ("empty", "", No("empty")),
];

#[test]
fn first_and_last_names_keep_letters_of_any_script_only() {
    check(&plain(), MatchKey::Fn, NAMES);
    check(&plain(), MatchKey::Ln, NAMES);
    check_user_data(&plain(), UserDataKey::Fn, NAMES);
    check_user_data(&plain(), UserDataKey::Ln, NAMES);
}

#[test]
fn the_first_initial_is_the_first_letter_of_the_normalized_first_name() {
    check(
        &plain(),
        MatchKey::Fi,
        &[
            ("a name", "Mary", Is("m")),
            (
                "divergence: an honorific still gives one letter",
                "Ms.",
                Is("m"),
            ),
            ("the SDK's example", "ABC", Is("a")),
            ("a single letter", "m", Is("m")),
            ("accented", "Valéry", Is("v")),
            ("accented first letter", "Élodie", Is("é")),
            ("NFD first letter", "E\u{301}lodie", Is("\u{e9}")),
            ("Korean", "정민", Is("정")),
            ("Spanish", "José", Is("j")),
            ("leading spaces", "  john", Is("j")),
            ("leading punctuation", "'Alice", Is("a")),
            ("leading digit", "1John", Is("j")),
            ("Polish", "Łukasz", Is("ł")),
            ("Greek", "Ωmega", Is("ω")),
            ("Devanagari", "अनिल", Is("अ")),
            ("hyphenated", "Mary-Jane", Is("m")),
            ("Spanish ñ", "Ñandú", Is("ñ")),
            ("digits only", "123", No("no letters")),
            ("punctuation only", "-", No("no letters")),
            ("empty", "", No("empty")),
        ],
    );
}

const CITIES: &[(&str, &str, Want)] = &[
    ("spaces are removed", "New York", Is("newyork")),
    ("trimmed", "  London  ", Is("london")),
    ("underscore is removed", "los_angeles", Is("losangeles")),
    ("accents are kept", "São Paulo", Is("sãopaulo")),
    (
        "punctuation is removed",
        "Washington, D.C.",
        Is("washingtondc"),
    ),
    (
        "apostrophe and full stop are removed",
        "St. John's",
        Is("stjohns"),
    ),
    ("hyphen is removed", "Winston-Salem", Is("winstonsalem")),
    ("digits are removed", "29 Palms", Is("palms")),
    ("capitals with umlaut", "MÜNCHEN", Is("münchen")),
    ("NFD is composed", "Ko\u{308}ln", Is("köln")),
    ("Japanese", "東京", Is("東京")),
    ("Cyrillic", "Москва", Is("москва")),
    ("Spanish", "Bogotá D.C.", Is("bogotádc")),
    (
        "Spanish with accents",
        "Ciudad de México",
        Is("ciudaddeméxico"),
    ),
    ("Córdoba", "Córdoba", Is("córdoba")),
    ("apostrophe inside", "Coeur d'Alene", Is("coeurdalene")),
    ("abbreviation", "LA", Is("la")),
    ("trailing tab", "NYC\t", Is("nyc")),
    (
        "transliterated hyphenated",
        "Sankt-Peterburg",
        Is("sanktpeterburg"),
    ),
    ("digits only", "123", No("no letters")),
    ("empty", "", No("empty")),
];

#[test]
fn cities_are_lowercase_letters_without_punctuation_digits_or_whitespace() {
    check(&plain(), MatchKey::Ct, CITIES);
    check_user_data(&plain(), UserDataKey::Ct, CITIES);
}

const STATES: &[(&str, &str, Want)] = &[
    (
        "divergence: a state name with a space maps to its code",
        "New York",
        Is("ny"),
    ),
    ("squashed name", "newyork", Is("ny")),
    ("name", "California", Is("ca")),
    ("capitals", "TEXAS", Is("tx")),
    ("code", "CA", Is("ca")),
    ("lowercase code", "ny", Is("ny")),
    ("dotted code", "N.Y.", Is("ny")),
    ("two words", "North Carolina", Is("nc")),
    ("lowercase two words", "west virginia", Is("wv")),
    ("a prefix of another state", "Virginia", Is("va")),
    ("hyphenated", "Rhode-Island", Is("ri")),
    ("DC in full", "District of Columbia", Is("dc")),
    ("DC as Washington, D.C.", "Washington, D.C.", Is("dc")),
    ("the state of Washington", "Washington", Is("wa")),
    ("a territory", "Puerto Rico", Is("pr")),
    ("a German state", "Bavaria", Is("bavaria")),
    (
        "a Canadian province",
        "British Columbia",
        Is("britishcolumbia"),
    ),
    (
        "a French region keeps accents",
        "Île-de-France",
        Is("îledefrance"),
    ),
    ("a Brazilian state", "São Paulo", Is("sãopaulo")),
    ("an Argentine province", "Buenos Aires", Is("buenosaires")),
    ("digits are dropped", "123abc ", Is("abc")),
    ("digits only", "12", No("no letters")),
    ("empty", "", No("empty")),
];

#[test]
fn us_states_become_two_letter_codes_and_other_regions_lowercase_letters() {
    check(&plain(), MatchKey::St, STATES);
    check_user_data(&plain(), UserDataKey::St, STATES);
}

const ZIPS: &[(&str, &str, Want)] = &[
    (
        "divergence: ZIP+4 with dash keeps the first 5 digits",
        "94035-1234",
        Is("94035"),
    ),
    ("ZIP+4 without dash", "940351234", Is("94035")),
    ("ZIP+4 with a space", "94035 1234", Is("94035")),
    ("ZIP+4 with an en dash", "94035–1234", Is("94035")),
    ("ZIP", "90210", Is("90210")),
    ("ZIP with spaces", " 90210 ", Is("90210")),
    ("leading zero kept", "02134", Is("02134")),
    ("UK postcode", "SW1A 1AA", Is("sw1a1aa")),
    ("UK postcode with dash", "SW1A-1AA", Is("sw1a1aa")),
    ("CAPI documented UK example", "M1 1AE", Is("m11ae")),
    ("Canadian", "K1A 0A6", Is("k1a0a6")),
    ("Canadian Santa", "H0H 0H0", Is("h0h0h0")),
    ("French", "75018", Is("75018")),
    ("Austrian", "1010", Is("1010")),
    ("Brazilian CEP", "01310-100", Is("01310100")),
    ("Japanese", "100-0001", Is("1000001")),
    ("Argentine CPA", "C1425DKF", Is("c1425dkf")),
    ("German with country letter", "D-10115", Is("d10115")),
    ("a trailing full stop", "75018.", Is("75018")),
    ("dashes only", "--", No("no letters or digits")),
    ("empty", "", No("empty")),
];

#[test]
fn zips_lose_whitespace_and_dashes_and_us_zip_plus_4_keeps_five_digits() {
    check(&plain(), MatchKey::Zip, ZIPS);
    check_user_data(&plain(), UserDataKey::Zp, ZIPS);
}

const COUNTRIES: &[(&str, &str, Want)] = &[
    (
        "divergence: documented CAPI example, a name",
        "United States",
        Is("us"),
    ),
    (
        "divergence: an upper-case code is lowercased",
        "US",
        Is("us"),
    ),
    ("a lower-case code", "us", Is("us")),
    ("alpha-3", "USA", Is("us")),
    ("dotted", "U.S.", Is("us")),
    ("dotted alpha-3", "U.S.A.", Is("us")),
    ("Spanish abbreviation", "EE.UU.", Is("us")),
    ("UK is GB", "UK", Is("gb")),
    ("United Kingdom", "United Kingdom", Is("gb")),
    ("GB", "GB", Is("gb")),
    ("Argentina", "Argentina", Is("ar")),
    ("ARG", "ARG", Is("ar")),
    ("Spanish name with accent", "México", Is("mx")),
    ("Portuguese name", "Brasil", Is("br")),
    ("English name", "Germany", Is("de")),
    ("DEU", "DEU", Is("de")),
    ("trimmed", "  in  ", Is("in")),
    ("common name", "South Korea", Is("kr")),
    ("apostrophe and accent", "Côte d'Ivoire", Is("ci")),
    ("with article", "The Netherlands", Is("nl")),
    ("Kosovo", "Kosovo", Is("xk")),
    ("one letter", "U", No("unknown country")),
    ("letter and digit", "U1", No("unknown country")),
    ("digits", "12", No("unknown country")),
    ("unassigned code", "XX", No("unknown country")),
    ("not a country", "EU", No("unknown country")),
    ("fiction", "Narnia", No("unknown country")),
    ("empty", "", No("empty")),
];

#[test]
fn countries_become_lowercase_iso_alpha_2() {
    check(&plain(), MatchKey::Country, COUNTRIES);
    check_user_data(&plain(), UserDataKey::Country, COUNTRIES);
}

#[test]
fn birth_years_are_four_digits_between_1900_and_this_year() {
    check(
        &plain(),
        MatchKey::Doby,
        &[
            ("a year", "1997", Is("1997")),
            ("trimmed", " 1990 ", Is("1990")),
            ("ISO date", "1997-02-16", Is("1997")),
            ("compact date", "19970216", Is("1997")),
            ("slashed year-first", "1997/2/16", Is("1997")),
            ("timestamp", "1997-02-16T10:00:00Z", Is("1997")),
            ("leap day", "2000-02-29", Is("2000")),
            ("first year", "1900", Is("1900")),
            ("this year", "2026", Is("2026")),
            ("before 1900", "1899", No("year out of range")),
            ("next year", "2027", No("year out of range")),
            ("0000", "0000", No("year out of range")),
            ("9999", "9999", No("year out of range")),
            ("two digits", "97", No("not a date")),
            ("five digits", "19999", No("not a date")),
            ("negative", "-1", No("not a date")),
            ("letters", "abcd", No("not a date")),
            ("day first", "16/02/1997", No("ambiguous day/month order")),
            ("impossible date", "1997-02-30", No("impossible date")),
            (
                "1900 was not a leap year",
                "1900-02-29",
                No("impossible date"),
            ),
            ("empty", "", No("empty")),
        ],
    );
}

#[test]
fn birth_months_are_two_digits_from_numbers_names_or_dates() {
    check(
        &plain(),
        MatchKey::Dobm,
        &[
            ("one digit", "1", Is("01")),
            ("nine", "9", Is("09")),
            ("two digits", "02", Is("02")),
            ("twelve", "12", Is("12")),
            ("divergence: an English name", "january", Is("01")),
            ("capitals", "MARCH", Is("03")),
            ("abbreviation", "Sept", Is("09")),
            ("three letters", "Dec", Is("12")),
            ("Spanish", "marzo", Is("03")),
            ("Portuguese with cedilla", "março", Is("03")),
            ("Italian", "settembre", Is("09")),
            ("ISO date", "1997-02-16", Is("02")),
            ("compact date", "19971231", Is("12")),
            ("thirteen", "13", No("month out of range")),
            ("zero", "0", No("month out of range")),
            ("double zero", "00", No("month out of range")),
            ("three digits", "444", No("not a date")),
            ("negative", "-1", No("not a date")),
            ("digit and letter", "0a", No("unknown month name")),
            ("not a month", "notamonth", No("unknown month name")),
            ("day first", "16/02/1997", No("ambiguous day/month order")),
            ("empty", "", No("empty")),
        ],
    );
}

#[test]
fn birth_days_are_two_digits_from_numbers_or_dates() {
    check(
        &plain(),
        MatchKey::Dobd,
        &[
            ("one digit", "1", Is("01")),
            ("nine", "9", Is("09")),
            ("two digits", "02", Is("02")),
            ("thirty-one", "31", Is("31")),
            ("trimmed", " 05 ", Is("05")),
            ("ISO date", "1997-02-16", Is("16")),
            ("compact date", "19970216", Is("16")),
            ("short ISO date", "1997-2-3", Is("03")),
            ("dotted", "1997.12.31", Is("31")),
            ("leap day", "2024-02-29", Is("29")),
            ("thirty-two", "32", No("day out of range")),
            ("zero", "0", No("day out of range")),
            ("three digits", "444", No("not a date")),
            ("digit and letter", "0a", No("not a date")),
            ("negative", "-1", No("not a date")),
            ("a word", "first", No("not a date")),
            ("impossible date", "1997-02-30", No("impossible date")),
            ("year out of range", "1899-01-01", No("year out of range")),
            ("day first", "16/02/1997", No("ambiguous day/month order")),
            ("month first", "02/16/1997", No("ambiguous day/month order")),
            ("empty", "", No("empty")),
        ],
    );
}

#[test]
fn capi_birth_dates_are_yyyymmdd_from_year_first_dates_only() {
    check_user_data(
        &plain(),
        UserDataKey::Db,
        &[
            ("documented example as ISO", "1997-02-16", Is("19970216")),
            ("documented example compact", "19970216", Is("19970216")),
            ("slashes", "1997/02/16", Is("19970216")),
            ("dots, one-digit month", "1997.2.16", Is("19970216")),
            ("one-digit month and day", "1997-2-3", Is("19970203")),
            ("ISO timestamp", "1997-02-16T00:00:00Z", Is("19970216")),
            (
                "Postgres timestamptz",
                "1997-02-16 00:00:00+00",
                Is("19970216"),
            ),
            ("leap day", "2000-02-29", Is("20000229")),
            ("day first", "16/02/1997", No("ambiguous day/month order")),
            ("month first", "02/16/1997", No("ambiguous day/month order")),
            (
                "short month first",
                "2/16/1997",
                No("ambiguous day/month order"),
            ),
            (
                "German dotted",
                "16.02.1997",
                No("ambiguous day/month order"),
            ),
            ("a year alone", "1997", No("not a date")),
            ("two-digit year", "97-02-16", No("not a date")),
            ("no day", "1997-02", No("not a date")),
            ("four parts", "1997-02-16-01", No("not a date")),
            ("words", "February 16, 1997", No("not a date")),
            ("full-width digits", "２０２０-01-01", No("not a date")),
            ("February 30", "1997-02-30", No("impossible date")),
            ("not a leap year", "1999-02-29", No("impossible date")),
            ("month 13", "1997-13-01", No("impossible date")),
            ("month 0 compact", "19970010", No("impossible date")),
            ("before 1900", "1899-12-31", No("year out of range")),
            ("after this year", "2027-01-01", No("year out of range")),
            ("empty", "", No("empty")),
        ],
    );
}

const GENDERS: &[(&str, &str, Want)] = &[
    ("m", "m", Is("m")),
    ("M", "M", Is("m")),
    ("male", "male", Is("m")),
    ("Male", "Male", Is("m")),
    ("with a full stop", "F.", Is("f")),
    ("F", "F", Is("f")),
    ("female", "female", Is("f")),
    ("woman", "Woman", Is("f")),
    ("Spanish male", "masculino", Is("m")),
    ("Spanish female", "Femenino", Is("f")),
    ("Spanish man", "hombre", Is("m")),
    ("Spanish woman", "mujer", Is("f")),
    ("Spanish with accent", "Varón", Is("m")),
    ("Portuguese man", "homem", Is("m")),
    ("Portuguese woman", "mulher", Is("f")),
    ("Portuguese female", "feminino", Is("f")),
    ("Italian male", "maschio", Is("m")),
    ("Italian woman", "donna", Is("f")),
    ("divergence: unknown is not m", "unknown", No("not m or f")),
    ("other", "other", No("not m or f")),
    ("x", "x", No("not m or f")),
    ("u", "u", No("not m or f")),
    ("Chinese", "男", No("not m or f")),
    ("empty", "", No("empty")),
];

#[test]
fn genders_are_m_or_f_and_anything_else_is_an_empty_cell() {
    check(&plain(), MatchKey::Gen, GENDERS);
    check_user_data(&plain(), UserDataKey::Ge, GENDERS);
}

const EXTERN_IDS: &[(&str, &str, Want)] = &[
    ("case is kept", "ABC123", Is("ABC123")),
    ("trimmed", " ext-001 ", Is("ext-001")),
    ("hyphens kept", "some-ext-id", Is("some-ext-id")),
    ("digits", "12345", Is("12345")),
    ("leading zeros kept", "0001", Is("0001")),
    ("inner space kept", "a b", Is("a b")),
    ("colon", "crm:42", Is("crm:42")),
    ("underscore", "ID_42", Is("ID_42")),
    ("byte-order mark trimmed", "\u{FEFF}42", Is("42")),
    ("CRLF trimmed", "42\r\n", Is("42")),
    ("accents kept as they are", "ÄBC", Is("ÄBC")),
    ("decimal kept as text", "42.0", Is("42.0")),
    ("negative kept as text", "-1", Is("-1")),
    ("an email as id", "User@Example.com", Is("User@Example.com")),
    (
        "a uuid",
        "550e8400-e29b-41d4-a716-446655440000",
        Is("550e8400-e29b-41d4-a716-446655440000"),
    ),
    (
        "a hash is not lowercased: EXTERN_ID is not a hashed key",
        SHA_OF_MAIL,
        Is(SHA_OF_MAIL),
    ),
    ("a tab inside", "a\tb", No("contains control characters")),
    (
        "a newline inside",
        "a\nb",
        No("contains control characters"),
    ),
    ("blank", "   ", No("empty")),
    ("empty", "", No("empty")),
];

#[test]
fn external_ids_are_sent_as_they_are_trimmed_and_unhashed() {
    check(&plain(), MatchKey::ExternId, EXTERN_IDS);
    check_user_data(&plain(), UserDataKey::ExternalId, EXTERN_IDS);
}

#[test]
fn an_external_id_over_1_kb_is_refused_and_one_of_1_kb_is_kept() {
    let at_limit = "é".repeat(512); // 1,024 bytes
    let over = "é".repeat(35_000); // 70,000 bytes, past the 64 KB a packed cell holds
    for raw in [&at_limit, &over] {
        let (id, event) = (
            plain().normalize(MatchKey::ExternId, raw),
            plain().normalize_user_data(UserDataKey::ExternalId, raw),
        );
        if raw.len() <= 1024 {
            assert_eq!(id.as_deref(), Ok(raw.as_str()));
            assert_eq!(event.as_deref(), Ok(raw.as_str()));
        } else {
            assert_eq!(id, Err(Rejection::Invalid("longer than 1 KB")));
            assert_eq!(event, Err(Rejection::Invalid("longer than 1 KB")));
        }
    }
}

#[test]
fn madids_are_lowercase_hyphenated_uuids() {
    check(
        &plain(),
        MatchKey::Madid,
        &[
            (
                "IDFA upper case",
                "6D92078A-8246-4BA4-AE5B-76104861E7DC",
                Is("6d92078a-8246-4ba4-ae5b-76104861e7dc"),
            ),
            (
                "IDFA lower case",
                "6d92078a-8246-4ba4-ae5b-76104861e7dc",
                Is("6d92078a-8246-4ba4-ae5b-76104861e7dc"),
            ),
            (
                "another IDFA",
                "EA7583CD-A667-48BC-B806-42ECB2B48606",
                Is("ea7583cd-a667-48bc-b806-42ecb2b48606"),
            ),
            (
                "GAID",
                "cdda802e-fb9c-47ad-9866-0794d394c912",
                Is("cdda802e-fb9c-47ad-9866-0794d394c912"),
            ),
            (
                "without hyphens",
                "6D92078A82464BA4AE5B76104861E7DC",
                Is("6d92078a-8246-4ba4-ae5b-76104861e7dc"),
            ),
            (
                "trimmed",
                " 38400000-8cf0-11bd-b23e-10b96e40000d ",
                Is("38400000-8cf0-11bd-b23e-10b96e40000d"),
            ),
            (
                "trailing CR",
                "38400000-8CF0-11BD-B23E-10B96E40000D\r",
                Is("38400000-8cf0-11bd-b23e-10b96e40000d"),
            ),
            (
                "limited ad tracking",
                "00000000-0000-0000-0000-000000000000",
                No("zeroed device id"),
            ),
            (
                "zeros without hyphens",
                "00000000000000000000000000000000",
                No("zeroed device id"),
            ),
            ("not hex", "AB1234CD-E123-12FG-J123", No("not a device id")),
            ("short", "ABC", No("not a device id")),
            (
                "one digit short",
                "38400000-8cf0-11bd-b23e-10b96e40000",
                No("not a device id"),
            ),
            (
                "one digit long",
                "38400000-8cf0-11bd-b23e-10b96e40000dd",
                No("not a device id"),
            ),
            (
                "misplaced hyphens",
                "3840000-08cf0-11bd-b23e-10b96e40000d",
                No("not a device id"),
            ),
            (
                "braces",
                "{38400000-8cf0-11bd-b23e-10b96e40000d}",
                No("not a device id"),
            ),
            (
                "a g",
                "g8400000-8cf0-11bd-b23e-10b96e40000d",
                No("not a device id"),
            ),
            (
                "underscores",
                "38400000_8cf0_11bd_b23e_10b96e40000d",
                No("not a device id"),
            ),
            (
                "spaces",
                "38400000 8cf0 11bd b23e 10b96e40000d",
                No("not a device id"),
            ),
            (
                "a SHA-256 is not passed through: MADID is never hashed",
                SHA_OF_MAIL,
                No("not a device id"),
            ),
            ("a hyphen", "-", No("not a device id")),
            ("empty", "", No("empty")),
        ],
    );
}

#[test]
fn lookalike_values_are_non_negative_plain_decimals() {
    check(
        &plain(),
        MatchKey::LookalikeValue,
        &[
            ("an integer", "5", Is("5")),
            ("a small fraction", "0.0001", Is("0.0001")),
            ("trailing zero", "5.0", Is("5")),
            ("money", "  12.50 ", Is("12.5")),
            ("exponent", "1e3", Is("1000")),
            ("negative exponent", "1e-7", Is("0.0000001")),
            ("zero", "0", Is("0")),
            ("negative zero", "-0", Is("0")),
            ("plus sign", "+7", Is("7")),
            ("leading zeros", "007", Is("7")),
            ("large", "123456789.25", Is("123456789.25")),
            ("negative", "-5", No("negative")),
            ("a word", "not-a-number", No("not a number")),
            ("Infinity", "Infinity", No("not a number")),
            ("inf", "inf", No("not a number")),
            ("NaN", "NaN", No("not a number")),
            ("overflow", "1e400", No("not a number")),
            ("thousands separator", "1,234.5", No("not a number")),
            ("currency sign", "$5", No("not a number")),
            ("a dot", ".", No("not a number")),
            ("two dots", "1.2.3", No("not a number")),
            ("empty", "", No("empty")),
        ],
    );
}
