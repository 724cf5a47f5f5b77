//! normalize + hash per key, and per 4-key row (EMAIL, PHONE, FN, LN), on messy inputs.
//!
//! `cargo bench --bench identity -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use cdp_meta_sync::identity::{MatchKey, Normalizer, UserDataKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Realistic CRM values: mixed case, padding, formatting, accents, some rejects.
fn samples(key: MatchKey) -> &'static [&'static str] {
    match key {
        MatchKey::Email => &[
            "  Mary.Smith@Example.COM ",
            "john_smith@gmail.com",
            "JOSÉ.PÉREZ@Correo.com.ar",
            "ana+promo@yahoo.com",
            "not-an-email",
            "Lucia.Fernandez1987@hotmail.com",
            "",
            "o'brien@company.co.uk",
        ],
        MatchKey::Phone => &[
            "+1 (650) 555-1212",
            "(650) 555-1212",
            "650.555.1212",
            "+44 20 7946 0958",
            "1-650-555-1212",
            "555-1212",
            "+1 212 555 0199 ext. 4",
            "6505551212",
        ],
        MatchKey::Fn | MatchKey::Fi => &[
            "Mary",
            "  JOHN ",
            "Valéry",
            "Mary-Jane",
            "O'Brien",
            "José Luis",
            "정",
            "",
        ],
        MatchKey::Ln => &[
            "Smith",
            "García Márquez",
            "O'Neill",
            "van der Berg",
            "MÜLLER",
            "Nguyễn",
            "Li",
            "",
        ],
        MatchKey::Ct => &[
            "New York",
            "São Paulo",
            "  London ",
            "Buenos Aires",
            "St. John's",
            "Córdoba",
        ],
        MatchKey::St => &[
            "New York",
            "CA",
            "texas",
            "Buenos Aires",
            "N.Y.",
            "British Columbia",
        ],
        MatchKey::Zip => &[
            "94035-1234",
            "90210",
            "SW1A 1AA",
            "C1425DKF",
            " 02134 ",
            "100-0001",
        ],
        MatchKey::Country => &["United States", "US", "usa", "Argentina", "UK", "México"],
        MatchKey::Doby | MatchKey::Dobm | MatchKey::Dobd => &[
            "1997-02-16",
            "19850101",
            "1990",
            "16/02/1997",
            "2001-12-31T00:00:00Z",
            "7",
        ],
        MatchKey::Gen => &["M", "female", "Femenino", "unknown", "f", "Hombre"],
        MatchKey::ExternId => &["CUST-000123", " 42 ", "a1b2c3", "crm:98765"],
        MatchKey::Madid => &[
            "6D92078A-8246-4BA4-AE5B-76104861E7DC",
            "cdda802e-fb9c-47ad-9866-0794d394c912",
        ],
        MatchKey::LookalikeValue => &["125.50", "0", "1e3", "99.99"],
    }
}

fn per_key(c: &mut Criterion) {
    let n = Normalizer::new(Some("US")).unwrap();
    let mut group = c.benchmark_group("cell");
    for key in MatchKey::ALL {
        let values = samples(key);
        group.throughput(Throughput::Elements(values.len() as u64));
        let mut out = String::with_capacity(128);
        group.bench_function(key.as_str(), |b| {
            b.iter(|| {
                for v in values {
                    out.clear();
                    let _ = black_box(n.cell_into(key, black_box(v), &mut out));
                }
            })
        });
    }
    group.finish();

    let ar = Normalizer::new(Some("AR")).unwrap();
    let mut group = c.benchmark_group("phone_paths");
    for (name, n, value) in [
        ("fast_international", &n, "+1 (650) 555-1212"),
        ("fast_national", &n, "(650) 555-1212"),
        ("parser_trunk_prefix", &n, "1-650-555-1212"),
        // Default country AR from here.
        ("fast_argentina", &ar, "+54 9 11 2345-6789"),
        ("fast_argentina_trunk", &ar, "0351 455-5123"),
        ("parser_argentina_15", &ar, "011 15 2345-6789"),
    ] {
        group.throughput(Throughput::Elements(1));
        let mut out = String::with_capacity(128);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let _ = black_box(n.cell_into(MatchKey::Phone, black_box(value), &mut out));
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("user_data");
    group.throughput(Throughput::Elements(1));
    group.bench_function("db", |b| {
        b.iter(|| n.user_data_cell(UserDataKey::Db, black_box("1997-02-16")))
    });
    group.finish();
}

/// Argentine phones as an Argentine CRM holds them: these need the full parser (Argentina's
/// national-prefix rules — trunk `0`, mobile `15` → `9` — are not on the fast path).
const AR_PHONES: [&str; 8] = [
    "011 15-2345-6789",
    "+54 9 11 2345-6789",
    "(011) 4321-5678",
    "11 2345 6789",
    "0351 15 412-3456",
    "5491123456789",
    "15-2345-6789",
    "+54 11 4321-5678",
];

fn rows<'a>(phones: &[&'a str]) -> Vec<[&'a str; 4]> {
    let (emails, fns, lns) = (
        samples(MatchKey::Email),
        samples(MatchKey::Fn),
        samples(MatchKey::Ln),
    );
    (0..8)
        .map(|i| [emails[i], phones[i], fns[i], lns[i]])
        .collect()
}

fn four_key_rows(c: &mut Criterion) {
    let keys = [MatchKey::Email, MatchKey::Phone, MatchKey::Fn, MatchKey::Ln];
    // 8 messy rows each; a realistic mix: most values valid, some rejected or missing.
    let systems = [
        (
            "us",
            Normalizer::new(Some("US")).unwrap(),
            rows(samples(MatchKey::Phone)),
        ),
        ("ar", Normalizer::new(Some("AR")).unwrap(), rows(&AR_PHONES)),
    ];
    let mut group = c.benchmark_group("row4");
    for (name, n, rows) in &systems {
        group.throughput(Throughput::Elements(rows.len() as u64));
        let mut cells: [String; 4] = Default::default();
        group.bench_function(format!("email_phone_fn_ln_{name}"), |b| {
            b.iter(|| {
                for row in rows {
                    for ((key, raw), cell) in keys.iter().zip(row).zip(cells.iter_mut()) {
                        cell.clear();
                        let _ = n.cell_into(*key, black_box(raw), cell);
                    }
                    black_box(&cells);
                }
            })
        });
    }
    // The US rows through the allocating `cell` API, for comparison.
    let (_, n, rows) = &systems[0];
    group.bench_function("email_phone_fn_ln_us_allocating", |b| {
        b.iter(|| {
            for row in rows {
                let cells: [_; 4] =
                    std::array::from_fn(|i| n.cell(keys[i], black_box(row[i])).unwrap_or_default());
                black_box(cells);
            }
        })
    });
    group.finish();

    let ar = &systems[1].1;
    let mut group = c.benchmark_group("cell");
    group.throughput(Throughput::Elements(AR_PHONES.len() as u64));
    let mut out = String::with_capacity(128);
    group.bench_function("PHONE_ar", |b| {
        b.iter(|| {
            for v in AR_PHONES {
                out.clear();
                let _ = black_box(ar.cell_into(MatchKey::Phone, black_box(v), &mut out));
            }
        })
    });
    group.finish();
}

/// Argentina, the default country of most of our systems: the demo generator's phone mix
/// (`+54 9 11 4555-1234`, `+549…`, `0351 …`, `(11) 4555-1234`, `0054 9 …`, bare national, junk),
/// per phone and per 4-key row (EMAIL, PHONE, FN, LN; missing values skipped as the sync does).
fn argentina(c: &mut Criterion) {
    let n = Normalizer::new(Some("AR")).unwrap();
    let customers: Vec<_> = (1..=1000)
        .map(|id| cdp_meta_sync::demo::customer(42, id))
        .collect();
    let phones: Vec<&str> = customers
        .iter()
        .filter_map(|c| c.phone.as_deref())
        .collect();
    let keys = [MatchKey::Email, MatchKey::Phone, MatchKey::Fn, MatchKey::Ln];
    let rows: Vec<[Option<&str>; 4]> = customers
        .iter()
        .map(|c| {
            [
                c.email.as_deref(),
                c.phone.as_deref(),
                c.firstname.as_deref(),
                c.lastname.as_deref(),
            ]
        })
        .collect();

    let mut group = c.benchmark_group("ar");
    group.throughput(Throughput::Elements(phones.len() as u64));
    let mut out = String::with_capacity(128);
    group.bench_function("phone_demo_mix", |b| {
        b.iter(|| {
            for v in &phones {
                out.clear();
                let _ = black_box(n.cell_into(MatchKey::Phone, black_box(v), &mut out));
            }
        })
    });
    group.throughput(Throughput::Elements(rows.len() as u64));
    let mut cells: [String; 4] = Default::default();
    group.bench_function("row4_demo", |b| {
        b.iter(|| {
            for row in &rows {
                for ((key, raw), cell) in keys.iter().zip(row).zip(cells.iter_mut()) {
                    cell.clear();
                    if let Some(raw) = raw {
                        let _ = n.cell_into(*key, black_box(raw), cell);
                    }
                }
                black_box(&cells);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, per_key, four_key_rows, argentina);
criterion_main!(benches);
