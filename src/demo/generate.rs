//! Pure generation of one demo customer from `(seed, id)`: every row is a function of its id, so
//! any count is reproducible and generation order does not matter.

/// Tenants of the demo systems, then two tenants that belong to no system.
pub const TENANTS: [i32; 9] = [20, 25, 28, 100, 107, 112, 118, 40, 41];

/// The standard eleven RFM segments.
pub const RFM_SEGMENTS: [&str; 11] = [
    "Champions",
    "Loyal Customers",
    "Potential Loyalists",
    "New Customers",
    "Promising",
    "Need Attention",
    "About To Sleep",
    "At Risk",
    "Cannot Lose Them",
    "Hibernating",
    "Lost",
];

const FIRST_NAMES: [&str; 24] = [
    "José",
    "María",
    "Ángela",
    "Zoë",
    "Renée",
    "Jean-Luc",
    "Ana María",
    "Lucía",
    "Martín",
    "Sofía",
    "Joaquín",
    "Valentina",
    "Mateo",
    "Camila",
    "Santiago",
    "Florencia",
    "Iñaki",
    "Agustín",
    "Mary",
    "John",
    "Valéry",
    "François",
    "Chloé",
    "Björn",
];
const LAST_NAMES: [&str; 24] = [
    "García",
    "Rodríguez",
    "González",
    "Fernández",
    "López",
    "Martínez",
    "O'Brien",
    "D'Angelo",
    "Pérez-Cotapos",
    "Müller",
    "Núñez",
    "Gómez",
    "Díaz",
    "Sánchez",
    "Romero",
    "Álvarez",
    "De la Fuente",
    "Smith",
    "Ibáñez",
    "Peña",
    "Castro",
    "Suárez",
    "Ruiz",
    "Herrera",
];
const DOMAINS: [&str; 8] = [
    "gmail.com",
    "hotmail.com",
    "yahoo.com.ar",
    "outlook.com",
    "fibertel.com.ar",
    "live.com",
    "icloud.com",
    "example.com",
];
const CITIES: [&str; 8] = [
    "Buenos Aires",
    "Córdoba",
    "Rosario",
    "Mendoza",
    "San Miguel de Tucumán",
    "La Plata",
    "Mar del Plata",
    "Salta",
];
const STATES: [&str; 6] = [
    "Buenos Aires",
    "Córdoba",
    "Santa Fe",
    "Mendoza",
    "Tucumán",
    "CABA",
];
const COUNTRIES: [&str; 6] = ["AR", "Argentina", "ar", " ARG ", "AR", "Argentina"];
const GENDERS: [&str; 8] = ["M", "F", "masculino", "femenino", "Male", "female", "X", ""];

/// One row of `customers_master`, plus its RFM segment and CLV.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoCustomer {
    pub id: i64,
    pub tenant_id: i32,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip: Option<String>,
    pub country: Option<String>,
    /// ISO date `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    pub external_id: Option<String>,
    pub rfm_segment: &'static str,
    /// CLV in cents.
    pub clv_cents: i64,
}

impl DemoCustomer {
    /// The value of one `customers_master` column, as stored (an impossible birth date cannot be
    /// stored in a DATE column: it is absent).
    pub fn value(&self, column: &str) -> Option<&str> {
        match column {
            "email" => self.email.as_deref(),
            "phone" => self.phone.as_deref(),
            "firstname" => self.firstname.as_deref(),
            "lastname" => self.lastname.as_deref(),
            "city" => self.city.as_deref(),
            "state" => self.state.as_deref(),
            "zip" => self.zip.as_deref(),
            "country" => self.country.as_deref(),
            "birth_date" => self
                .birth_date
                .as_deref()
                .filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()),
            "gender" => self.gender.as_deref(),
            "external_id" => self.external_id.as_deref(),
            _ => None,
        }
    }
}

/// SplitMix64: tiny, fast and fully deterministic across platforms and crate versions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, id: u64) -> Self {
        let mut r = Rng(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    /// True with the given percent probability.
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// The customer with this id. About 3 % of customers of tenants 20 and 100 are the same person
/// as customer `id - 1` appearing again in the sibling tenant of the same system (25, 107), with
/// the email in different case and padding.
pub fn customer(seed: u64, id: i64) -> DemoCustomer {
    let mut rng = Rng::new(seed, id as u64);
    if id > 1 && rng.percent(3) {
        let original = base_customer(seed, id - 1);
        let sibling = match original.tenant_id {
            20 => Some(25),
            100 => Some(107),
            _ => None,
        };
        if let Some(tenant_id) = sibling {
            let mut twin = base_customer(seed, id);
            twin.tenant_id = tenant_id;
            twin.firstname = original.firstname.clone();
            twin.lastname = original.lastname.clone();
            twin.email = original
                .email
                .as_ref()
                .map(|e| format!("  {}  ", e.trim().to_uppercase()));
            twin.phone = original.phone.clone();
            return twin;
        }
    }
    base_customer(seed, id)
}

fn base_customer(seed: u64, id: i64) -> DemoCustomer {
    // A second stream, so that the twin decision above does not shift these draws.
    let mut rng = Rng::new(seed.rotate_left(17) ^ 0xD1B5_4A32_D192_ED03, id as u64);
    let tenant_id = pick_tenant(&mut rng);
    let first = rng.pick(&FIRST_NAMES);
    let last = rng.pick(&LAST_NAMES);
    let domain = rng.pick(&DOMAINS);

    let email = match rng.below(100) {
        0..=5 => None,
        6..=7 => Some(String::new()),
        8 => Some(format!(
            "{}.{}{}",
            ascii_slug(first),
            ascii_slug(last),
            domain
        )), // no @
        9 => Some(format!("{}@", ascii_slug(first))),
        10..=24 => Some(format!(
            " {}.{}{}@{} ",
            ascii_slug(first).to_uppercase(),
            ascii_slug(last),
            id,
            domain
        )),
        _ => Some(format!(
            "{}.{}{}@{}",
            ascii_slug(first),
            ascii_slug(last),
            id,
            domain
        )),
    };
    let area = ["11", "351", "341", "261", "381", "221"][rng.below(6) as usize];
    let local = 4_000_000 + (id as u64 * 7_919 + rng.below(1000)) % 5_999_999;
    let local = if area == "11" {
        format!("{local:08}")
    } else {
        format!("{:07}", local % 10_000_000)
    };
    let phone = match rng.below(100) {
        0..=9 => None,
        10..=11 => Some("sin teléfono".to_string()),
        12..=13 => Some("12345".to_string()),
        14..=33 => Some(format!(
            "+54 9 {area} {}-{}",
            &local[..local.len() - 4],
            &local[local.len() - 4..]
        )),
        34..=53 => Some(format!("+549{area}{local}")),
        54..=68 => Some(format!("0{area} {local}")),
        69..=78 => Some(format!(
            "({area}) {}-{}",
            &local[..local.len() - 4],
            &local[local.len() - 4..]
        )),
        79..=88 => Some(format!("0054 9 {area} {local}")),
        _ => Some(format!("{area}{local}")),
    };
    let (firstname, lastname) = match rng.below(100) {
        0..=2 => (None, None),
        3..=12 => (
            Some(format!("  {}", first.to_uppercase())),
            Some(format!("{} ", last.to_lowercase())),
        ),
        _ => (Some(first.to_string()), Some(last.to_string())),
    };
    let city = rng.percent(85).then(|| rng.pick(&CITIES).to_string());
    let state = rng.percent(80).then(|| rng.pick(&STATES).to_string());
    let zip = rng.percent(75).then(|| match rng.below(3) {
        0 => format!("{}", 1000 + rng.below(8000)),
        1 => format!("C{}AAA", 1000 + rng.below(400)),
        _ => format!(" b{} ", 1600 + rng.below(300)),
    });
    let country = rng.percent(70).then(|| rng.pick(&COUNTRIES).to_string());
    let birth_date = match rng.below(100) {
        0..=24 => None,
        25 => Some("1990-02-30".to_string()), // impossible date
        _ => Some(format!(
            "{}-{:02}-{:02}",
            1940 + rng.below(66),
            1 + rng.below(12),
            1 + rng.below(28)
        )),
    };
    let gender = rng.percent(80).then(|| rng.pick(&GENDERS).to_string());
    let external_id = rng.percent(90).then(|| format!("CRM-{tenant_id}-{id:08}"));
    let rfm_segment = RFM_SEGMENTS[rng.below(RFM_SEGMENTS.len() as u64) as usize];
    let clv_cents = (rng.below(5_000_000) + 1_000) as i64;
    DemoCustomer {
        id,
        tenant_id,
        email,
        phone,
        firstname,
        lastname,
        city,
        state,
        zip,
        country,
        birth_date,
        gender,
        external_id,
        rfm_segment,
        clv_cents,
    }
}

fn pick_tenant(rng: &mut Rng) -> i32 {
    // Weights: large brands get more customers; 5 % land in tenants of no system.
    const WEIGHTS: [(i32, u64); 9] = [
        (20, 30),
        (25, 15),
        (28, 20),
        (100, 10),
        (107, 8),
        (112, 6),
        (118, 6),
        (40, 3),
        (41, 2),
    ];
    let mut roll = rng.below(100);
    for (tenant, weight) in WEIGHTS {
        if roll < weight {
            return tenant;
        }
        roll -= weight;
    }
    TENANTS[0]
}

/// Lowercase ASCII letters of a name, for building email local parts.
fn ascii_slug(name: &str) -> String {
    name.chars()
        .filter_map(|c| match c {
            'á' | 'Á' => Some('a'),
            'é' | 'É' | 'ë' => Some('e'),
            'í' | 'Í' => Some('i'),
            'ó' | 'Ó' | 'ö' => Some('o'),
            'ú' | 'Ú' | 'ü' => Some('u'),
            'ñ' | 'Ñ' => Some('n'),
            'ç' => Some('c'),
            c if c.is_ascii_alphabetic() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_id_give_the_same_customer() {
        for id in 1..2000 {
            assert_eq!(customer(7, id), customer(7, id));
        }
    }

    #[test]
    fn another_seed_gives_other_customers() {
        let same = (1..1000)
            .filter(|&id| customer(1, id) == customer(2, id))
            .count();
        assert!(same < 10, "{same} identical rows");
    }

    #[test]
    fn the_data_is_messy_in_the_ways_a_crm_export_is() {
        let rows: Vec<_> = (1..20_000).map(|id| customer(42, id)).collect();
        let has = |f: &dyn Fn(&DemoCustomer) -> bool| rows.iter().any(f);
        assert!(has(&|c| c.email.is_none()));
        assert!(has(&|c| c
            .email
            .as_deref()
            .is_some_and(|e| e.starts_with(' ') && e.contains('@'))));
        assert!(has(&|c| c
            .email
            .as_deref()
            .is_some_and(|e| !e.is_empty() && !e.contains('@'))));
        assert!(has(&|c| c
            .phone
            .as_deref()
            .is_some_and(|p| p.starts_with("+54"))));
        assert!(has(&|c| c
            .phone
            .as_deref()
            .is_some_and(|p| p.starts_with('0') && !p.starts_with("00"))));
        assert!(has(&|c| c
            .phone
            .as_deref()
            .is_some_and(|p| p.chars().any(|c| c.is_alphabetic()))));
        assert!(has(&|c| c
            .lastname
            .as_deref()
            .is_some_and(|n| n.contains('\''))));
        assert!(has(&|c| c
            .firstname
            .as_deref()
            .is_some_and(|n| n.contains('-'))));
        assert!(has(&|c| c
            .firstname
            .as_deref()
            .is_some_and(|n| !n.is_ascii())));
        assert!(has(&|c| c.tenant_id == 40 || c.tenant_id == 41));
        for segment in RFM_SEGMENTS {
            assert!(has(&|c| c.rfm_segment == segment), "{segment}");
        }
    }

    #[test]
    fn some_people_appear_in_two_tenants_of_one_system() {
        let twins = (2..20_000)
            .map(|id| (customer(42, id - 1), customer(42, id)))
            .filter(|(a, b)| {
                a.email.is_some()
                    && a.tenant_id != b.tenant_id
                    && a.email.as_deref().map(|e| e.trim().to_lowercase())
                        == b.email.as_deref().map(|e| e.trim().to_lowercase())
            })
            .count();
        assert!(twins > 50, "{twins} twins");
    }
}
