//! Results of the analytics calls, and the definitions that compute them.
//!
//! Each result type documents its fields' definitions. The in-memory store computes
//! them with the functions here; PostgreSQL computes the same figures in SQL (the
//! migrations' `get_*` functions) and shares the parts computed after the query (the
//! wording of reasons and recommendations). So both agree to the last digit
//! (floating-point fields to within rounding).

mod cost;
mod health;
mod recommendations;
mod statistics;

pub use cost::{AgentCost, CostAnalysis, DailyCost};
pub use health::{DatabaseHealth, SystemHealth};
pub use recommendations::Recommendation;
pub use statistics::{CategoryCount, UserStatistics, WeekPoint};

pub(crate) use cost::{cost_analysis, cost_recommendations};
pub(crate) use health::system_health;
pub(crate) use recommendations::{recommend, recommendation_reason};
pub(crate) use statistics::user_statistics;

/// `sum ÷ n`, or `None` when there is nothing to average.
fn mean(sum: i64, n: i64) -> Option<f64> {
    (n > 0).then(|| sum as f64 / n as f64)
}

/// Whether `t` falls in the half-open range `[from, to)`.
fn within(t: chrono::DateTime<chrono::Utc>, r: &super::DateRange) -> bool {
    t >= r.from && t < r.to
}

#[cfg(test)]
mod tests {
    #[test]
    fn means() {
        assert_eq!(super::mean(7, 2), Some(3.5));
        assert_eq!(super::mean(0, 0), None);
    }
}
