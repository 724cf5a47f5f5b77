//! Secrets (tokens, passwords) kept in a type that never prints its value.
//!
//! `secrecy::SecretString` already redacts itself in `Debug`; this module re-exports it so that the
//! whole crate uses one type, and holds the tests that prove the redaction.
pub use secrecy::{ExposeSecret, SecretString};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_string_does_not_show_its_value_in_debug_output() {
        let secret = SecretString::from("EAAJs4xreU3IBPp7-super-secret".to_string());
        let shown = format!("{secret:?}");
        assert!(!shown.contains("EAAJ"), "{shown}");
        assert_eq!(secret.expose_secret(), "EAAJs4xreU3IBPp7-super-secret");
    }
}
