//! Serde helpers for the settings structs (feature `config`), for what `humantime-serde`
//! does not cover: a pair of durations (`["200ms", "500ms"]`) and a rate limit quota
//! (`{ rate = 10, per = "1m", burst = 5 }`). Plain durations use `humantime_serde`
//! directly (`#[serde(with = "humantime_serde")]`).
//!
//! It names only `domain` (the crate-wide `MAX_DURATION`), so any settings struct may use it.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use serde::{Deserialize, Deserializer};

/// A duration written as a human string: `"150ms"`, `"30s"`, `"2h"`, `"1h 30m"`.
#[derive(Deserialize)]
#[serde(transparent)]
struct Human(#[serde(with = "humantime_serde")] Duration);

/// Deserialises `(warning, critical)` durations written as two human strings,
/// `["200ms", "500ms"]`.
pub(crate) fn duration_pair<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<(Duration, Duration), D::Error> {
    let (a, b) = <(Human, Human)>::deserialize(d)?;
    Ok((a.0, b.0))
}

/// A rate limit as written in a settings document: `rate` cells every `per`, with
/// bursts of `burst` (default: `rate`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaDoc {
    rate: NonZeroU32,
    per: Human,
    #[serde(default)]
    burst: Option<NonZeroU32>,
}

/// A [`Quota`] deserialised from `{ "rate": 10, "per": "1m", "burst": 5 }` (10 a
/// minute, bursts of 5 — what `Quota::per_minute(10).allow_burst(5)` builds). `burst`
/// defaults to `rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotaSetting(pub(crate) Quota);

impl<'de> Deserialize<'de> for QuotaSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let doc = QuotaDoc::deserialize(d)?;
        let period = doc.per.0 / doc.rate.get();
        let q = Quota::with_period(period).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "a quota of {} every {:?} has a zero period between cells",
                doc.rate, doc.per.0
            ))
        })?;
        // governor keeps a burst's worth of periods in a u64 of nanoseconds and
        // panics (or wraps) past it: refuse such a quota here, naming it.
        let burst = doc.burst.unwrap_or(doc.rate);
        if doc.per.0 > crate::domain::validate::MAX_DURATION
            || period.as_nanos() * u128::from(burst.get()) > u128::from(u64::MAX)
        {
            return Err(serde::de::Error::custom(format!(
                "a quota of {} every {:?} with bursts of {burst} is too long: `per` may be \
                 at most 366 days, and `per` / `rate` × `burst` at most 584 years",
                doc.rate, doc.per.0
            )));
        }
        Ok(Self(q.allow_burst(burst)))
    }
}

/// Deserialises a [`Quota`] written as [`QuotaSetting`] is.
pub(crate) fn quota<'de, D: Deserializer<'de>>(d: D) -> Result<Quota, D::Error> {
    QuotaSetting::deserialize(d).map(|q| q.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        #[serde(deserialize_with = "duration_pair")]
        pair: (Duration, Duration),
        #[serde(deserialize_with = "quota")]
        quota: Quota,
    }

    #[test]
    fn pairs_and_quotas_read_as_documented() {
        let d: Doc = serde_json::from_str(
            r#"{ "pair": ["200ms", "1m 30s"], "quota": { "rate": 10, "per": "1m", "burst": 5 } }"#,
        )
        .unwrap();
        assert_eq!(
            d.pair,
            (Duration::from_millis(200), Duration::from_secs(90))
        );
        let ten = NonZeroU32::new(10).unwrap();
        assert_eq!(
            d.quota,
            Quota::per_minute(ten).allow_burst(NonZeroU32::new(5).unwrap())
        );
        let q: QuotaSetting = serde_json::from_str(r#"{ "rate": 10, "per": "1s" }"#).unwrap();
        assert_eq!(q.0, Quota::per_second(ten), "burst defaults to the rate");
        for bad in [
            r#"{ "rate": 0, "per": "1s" }"#,
            r#"{ "rate": 10, "per": "0s" }"#,
            r#"{ "rate": 10, "per": "soon" }"#,
            r#"{ "rate": 10, "per": "1s", "burst": 0 }"#,
            r#"{ "rate": 10, "per": "1s", "bursts": 3 }"#,
        ] {
            assert!(serde_json::from_str::<QuotaSetting>(bad).is_err(), "{bad}");
        }
    }
}
