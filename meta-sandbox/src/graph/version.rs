//! The Graph API versions the sandbox serves.

/// The versions the sandbox serves, as Meta's Marketing API did in late 2026: v25.0 to v27.0.
const OLDEST_VERSION: u32 = 25;
pub(super) const LATEST_VERSION: &str = "v27.0";
const LATEST_MAJOR: u32 = 27;

pub(super) enum Version {
    Served,
    /// Older than the oldest served: Meta's "deprecated version" error.
    Expired,
    /// Not a version, or one not released yet.
    Unknown,
}

pub(super) fn served_version(s: &str) -> Version {
    if !is_version(s) {
        return Version::Unknown;
    }
    let major: u32 = s[1..]
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < OLDEST_VERSION {
        Version::Expired
    } else if major > LATEST_MAJOR {
        Version::Unknown
    } else {
        Version::Served
    }
}

fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let (major, minor) = match rest.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    digits(major) && minor.is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_look_like_v_digits_with_an_optional_minor() {
        assert!(is_version("v26.0") && is_version("v19") && is_version("v2.11"));
        assert!(
            !is_version("26.0") && !is_version("v26.") && !is_version("vx") && !is_version("act_1")
        );
    }
}
