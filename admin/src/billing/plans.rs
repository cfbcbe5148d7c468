//! The plan catalog: `free`, `pro`, `enterprise`, their prices and quotas,
//! and the mapping between plan keys and the Stripe prices configured for
//! them. Stripe holds what a customer pays; this table holds what a plan
//! grants, so a price id that is not configured here grants nothing.

use crate::config::AdminConfig;
use crate::projects::project_quota;

/// A plan key, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Plan {
    /// The default of every account.
    Free,
    /// Paid, self-serve.
    Pro,
    /// Paid, large.
    Enterprise,
}

impl Plan {
    /// Every plan, cheapest first (the catalog's order).
    pub const ALL: [Plan; 3] = [Plan::Free, Plan::Pro, Plan::Enterprise];

    /// The key stored in `users.plan` and used in the API.
    pub fn key(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }

    /// Parses a key; unknown keys are `None`.
    pub fn parse(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.key() == key)
    }

    /// Display name for the dashboard.
    pub fn name(self) -> &'static str {
        match self {
            Plan::Free => "Free",
            Plan::Pro => "Pro",
            Plan::Enterprise => "Enterprise",
        }
    }

    /// List price per month in US cents. Informational: what is charged is
    /// the configured Stripe price.
    pub fn monthly_price_cents(self) -> i64 {
        match self {
            Plan::Free => 0,
            Plan::Pro => 4_900,
            Plan::Enterprise => 49_900,
        }
    }

    /// Projects the plan may own (the one table, in [`project_quota`]).
    pub fn project_quota(self) -> i64 {
        project_quota(self.key())
    }

    /// Verifications per calendar month (UTC) the plan includes.
    pub fn monthly_verifications(self) -> i64 {
        match self {
            Plan::Free => 10_000,
            Plan::Pro => 1_000_000,
            Plan::Enterprise => 50_000_000,
        }
    }

    /// The Stripe price configured for this plan (`None` for free and for a
    /// paid plan whose `STRIPE_PRICE_*` is unset).
    pub fn price_id(self, config: &AdminConfig) -> Option<&str> {
        match self {
            Plan::Free => None,
            Plan::Pro => config.stripe_price_pro.as_deref(),
            Plan::Enterprise => config.stripe_price_enterprise.as_deref(),
        }
    }

    /// The paid plan a Stripe price id stands for, if it is one of the two
    /// configured prices.
    pub fn for_price(config: &AdminConfig, price_id: &str) -> Option<Self> {
        [Plan::Pro, Plan::Enterprise]
            .into_iter()
            .find(|p| p.price_id(config) == Some(price_id))
    }
}

/// Subscription statuses that grant their plan. `past_due`, `unpaid`,
/// `incomplete`, `canceled`… do not: a failed payment moves the account back
/// to free until Stripe reports the subscription active again.
pub fn status_grants_plan(status: &str) -> bool {
    matches!(status, "active" | "trialing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_prices_map() {
        for p in Plan::ALL {
            assert_eq!(Plan::parse(p.key()), Some(p));
        }
        assert_eq!(Plan::parse("gold"), None);
        let mut config = AdminConfig::local(std::path::Path::new("/tmp"), String::new());
        assert_eq!(Plan::for_price(&config, "price_pro"), None);
        config.stripe_price_pro = Some("price_pro".into());
        assert_eq!(Plan::for_price(&config, "price_pro"), Some(Plan::Pro));
        assert_eq!(Plan::for_price(&config, "price_other"), None);
        assert!(Plan::Enterprise > Plan::Pro && Plan::Pro > Plan::Free);
        assert_eq!(Plan::Free.project_quota(), 3);
    }
}
