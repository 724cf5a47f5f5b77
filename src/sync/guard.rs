//! The removal guard: a run that would remove more than a set share of the audience (an emptied
//! source table, a broken join) holds its removals back until an operator lets them through.

#[derive(Debug, Clone, PartialEq)]
pub enum Removals {
    Send,
    /// Held back, with the sentence written to `error_log`.
    Held(String),
}

/// Decides on this run's removals. `force` is the operator's `force_removals = true`.
pub fn decide(audience: i64, to_remove: i64, max_share: f64, force: bool) -> Removals {
    if to_remove == 0 || force || audience == 0 {
        return Removals::Send;
    }
    let share = to_remove as f64 / audience as f64;
    if share <= max_share {
        return Removals::Send;
    }
    Removals::Held(format!(
        "removals held: this run would remove {to_remove} of {audience} members ({:.1}%), more than the {:.1}% allowed; \
         check the source data, then set force_removals = true (or raise max_removal_share) to let them through",
        share * 100.0,
        max_share * 100.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_within_the_share_are_sent() {
        assert_eq!(decide(1000, 200, 0.2, false), Removals::Send);
        assert_eq!(decide(1000, 0, 0.0, false), Removals::Send);
    }

    #[test]
    fn removals_above_the_share_are_held_with_a_reason_an_operator_can_act_on() {
        let Removals::Held(why) = decide(1000, 201, 0.2, false) else {
            panic!("not held")
        };
        assert!(
            why.contains("201 of 1000") && why.contains("force_removals"),
            "{why}"
        );
    }

    #[test]
    fn an_operator_can_force_removals_through() {
        assert_eq!(decide(1000, 1000, 0.2, true), Removals::Send);
    }

    #[test]
    fn the_first_run_has_nothing_to_guard() {
        assert_eq!(decide(0, 0, 0.2, false), Removals::Send);
    }
}
