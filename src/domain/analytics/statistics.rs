//! [`UserStatistics`]: a user's activity over a range, from their progress entries.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{mean, within};
use crate::domain::{DateRange, PracticeId, ProgressEntry, UserId};

/// A user's activity over a date range (`[from, to)`, by `created_at` of progress entries).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserStatistics {
    /// Whose.
    pub user_id: UserId,
    /// Start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
    /// Progress entries in the range.
    pub total_sessions: i64,
    /// Completed entries that reference a practice.
    pub total_practices: i64,
    /// Completed entries ÷ entries; 0 when there are none.
    pub completion_rate: f64,
    /// Mean rating of rated entries.
    pub average_rating: Option<f64>,
    /// Sum of `duration_minutes`.
    pub session_minutes: i64,
    /// Consecutive UTC days with a completed entry, ending on the range's last day
    /// (or the day before it, so a streak is not lost before today's session).
    pub current_streak_days: i32,
    /// Longest run of consecutive UTC days with a completed entry in the range.
    pub longest_streak_days: i32,
    /// Up to three categories of completed practices, most frequent first (ties by name).
    pub top_categories: Vec<CategoryCount>,
    /// One point per ISO week (Monday start, UTC) that has entries, oldest first.
    pub weekly_trend: Vec<WeekPoint>,
    /// Mean of `mood_after - mood_before` over entries that have both.
    pub mood_improvement: Option<f64>,
    /// Completed entries per week of the range.
    pub learning_velocity: f64,
}

/// A category and how often it was practised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryCount {
    /// The category.
    pub category: String,
    /// Completed practice entries in it.
    pub count: i64,
}

/// One week of activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeekPoint {
    /// The week's Monday (UTC).
    pub week_start: NaiveDate,
    /// Entries that week.
    pub sessions: i64,
    /// Completed entries that week.
    pub completed: i64,
    /// Minutes that week.
    pub minutes: i64,
}

/// `user`'s statistics over `range`, from their progress entries (entries outside the
/// range are skipped). `category` gives a practice's category; a completed entry whose
/// practice it does not know counts in no category.
pub(crate) fn user_statistics<'e, 'c>(
    user: UserId,
    range: &DateRange,
    entries: impl IntoIterator<Item = &'e ProgressEntry>,
    category: impl Fn(PracticeId) -> Option<&'c str>,
) -> UserStatistics {
    let entries: Vec<&ProgressEntry> = entries
        .into_iter()
        .filter(|e| within(e.created_at, range))
        .collect();
    let total = entries.len() as i64;
    let completed: Vec<&ProgressEntry> = entries.iter().copied().filter(|e| e.completed).collect();
    let n_completed = completed.len() as i64;
    let rated: Vec<i64> = entries
        .iter()
        .filter_map(|e| e.rating.map(i64::from))
        .collect();
    let moods: Vec<i64> = entries
        .iter()
        .filter_map(|e| Some(i64::from(e.mood_after?) - i64::from(e.mood_before?)))
        .collect();
    let days: BTreeSet<NaiveDate> = completed
        .iter()
        .map(|e| e.created_at.date_naive())
        .collect();
    let last_day = (range.to - Duration::microseconds(1)).date_naive();
    let (current, longest) = streaks(&days, last_day);
    UserStatistics {
        user_id: user,
        from: range.from,
        to: range.to,
        total_sessions: total,
        total_practices: completed.iter().filter(|e| e.practice_id.is_some()).count() as i64,
        completion_rate: mean(n_completed, total).unwrap_or(0.0),
        average_rating: mean(rated.iter().sum(), rated.len() as i64),
        session_minutes: entries.iter().map(|e| i64::from(e.duration_minutes)).sum(),
        current_streak_days: current,
        longest_streak_days: longest,
        top_categories: top_categories(completed.iter().filter_map(|e| category(e.practice_id?))),
        weekly_trend: weekly_trend(&entries),
        mood_improvement: mean(moods.iter().sum(), moods.len() as i64),
        learning_velocity: n_completed as f64 / weeks(range),
    }
}

/// Up to three categories, most frequent first (ties by name), from one category per
/// completed practice entry.
pub(super) fn top_categories<'c>(
    categories: impl IntoIterator<Item = &'c str>,
) -> Vec<CategoryCount> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for c in categories {
        *counts.entry(c).or_default() += 1;
    }
    let mut v: Vec<CategoryCount> = counts
        .into_iter()
        .map(|(category, count)| CategoryCount {
            category: category.to_string(),
            count,
        })
        .collect();
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.category.cmp(&b.category))
    });
    v.truncate(3);
    v
}

/// The current and the longest run of consecutive days in `days`. The current run is
/// the one that reaches `last_day` or the day before it.
fn streaks(days: &BTreeSet<NaiveDate>, last_day: NaiveDate) -> (i32, i32) {
    let mut longest = 0;
    let mut current = 0;
    let mut run = 0;
    let mut prev: Option<NaiveDate> = None;
    for d in days {
        run = match prev {
            Some(p) if *d == p + Duration::days(1) => run + 1,
            _ => 1,
        };
        longest = longest.max(run);
        if *d >= last_day - Duration::days(1) {
            current = run;
        }
        prev = Some(*d);
    }
    (current, longest)
}

/// The Monday of `d`'s ISO week.
fn week_start(d: NaiveDate) -> NaiveDate {
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

/// One point per week that has entries, oldest first.
fn weekly_trend(entries: &[&ProgressEntry]) -> Vec<WeekPoint> {
    let mut weeks: BTreeMap<NaiveDate, WeekPoint> = BTreeMap::new();
    for e in entries {
        let w = week_start(e.created_at.date_naive());
        let p = weeks.entry(w).or_insert(WeekPoint {
            week_start: w,
            sessions: 0,
            completed: 0,
            minutes: 0,
        });
        p.sessions += 1;
        p.completed += i64::from(e.completed);
        p.minutes += i64::from(e.duration_minutes);
    }
    weeks.into_values().collect()
}

/// The range's length in weeks.
fn weeks(r: &DateRange) -> f64 {
    (r.to - r.from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6 / 604_800.0
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn at(d: NaiveDate, hour: u32) -> DateTime<Utc> {
        Utc.from_utc_datetime(&d.and_hms_opt(hour, 0, 0).unwrap())
    }

    fn entry(user: UserId, t: DateTime<Utc>, completed: bool) -> ProgressEntry {
        ProgressEntry {
            id: crate::domain::ProgressId::new(),
            user_id: user,
            practice_id: None,
            goal_id: None,
            learning_path_id: None,
            duration_minutes: 10,
            rating: None,
            mood_before: None,
            mood_after: None,
            notes: None,
            completed,
            completed_at: completed.then_some(t),
            created_at: t,
        }
    }

    #[test]
    fn streaks_count_consecutive_days_and_keep_yesterdays_run_current() {
        let days: BTreeSet<NaiveDate> = [1, 2, 3, 5, 6, 9]
            .into_iter()
            .map(|d| day(2024, 1, d))
            .collect();
        assert_eq!(streaks(&days, day(2024, 1, 9)), (1, 3));
        // A run that ends today or ended yesterday is current; one that ended before is not.
        let days: BTreeSet<NaiveDate> = [1, 2, 3, 5, 6]
            .into_iter()
            .map(|d| day(2024, 1, d))
            .collect();
        assert_eq!(streaks(&days, day(2024, 1, 6)), (2, 3));
        assert_eq!(streaks(&days, day(2024, 1, 7)), (2, 3));
        assert_eq!(streaks(&days, day(2024, 1, 8)), (0, 3));
        assert_eq!(streaks(&BTreeSet::new(), day(2024, 1, 8)), (0, 0));
        // Across a month's end.
        let days: BTreeSet<NaiveDate> = [day(2024, 1, 31), day(2024, 2, 1)].into();
        assert_eq!(streaks(&days, day(2024, 2, 1)), (2, 2));
    }

    #[test]
    fn weeks_start_on_monday() {
        assert_eq!(week_start(day(2024, 1, 7)), day(2024, 1, 1)); // a Sunday
        assert_eq!(week_start(day(2024, 1, 8)), day(2024, 1, 8)); // a Monday
        assert_eq!(week_start(day(2024, 1, 3)), day(2024, 1, 1));
    }

    #[test]
    fn top_categories_are_three_most_frequent_ties_by_name() {
        let v = top_categories(["b", "a", "c", "b", "d", "a", "c", "e"]);
        let got: Vec<(&str, i64)> = v.iter().map(|c| (c.category.as_str(), c.count)).collect();
        assert_eq!(got, [("a", 2), ("b", 2), ("c", 2)]);
        assert!(top_categories([]).is_empty());
    }

    #[test]
    fn statistics_of_entries_in_the_range() {
        let u = UserId::new();
        let r = DateRange {
            from: at(day(2024, 1, 1), 0),
            to: at(day(2024, 1, 15), 0),
        };
        let practice = PracticeId::new();
        let unknown = PracticeId::new();
        let mut rated = entry(u, at(day(2024, 1, 13), 9), true);
        rated.rating = Some(4);
        rated.mood_before = Some(3);
        rated.mood_after = Some(6);
        rated.practice_id = Some(practice);
        let mut other = entry(u, at(day(2024, 1, 14), 9), true);
        other.rating = Some(5);
        other.practice_id = Some(unknown);
        let entries = [
            entry(u, at(day(2023, 12, 31), 23), true), // before the range
            entry(u, at(day(2024, 1, 2), 8), false),
            rated,
            other,
            entry(u, r.to, true), // the range's end is excluded
        ];
        let s = user_statistics(u, &r, &entries, |p| (p == practice).then_some("calm"));
        assert_eq!((s.user_id, s.from, s.to), (u, r.from, r.to));
        assert_eq!(s.total_sessions, 3);
        assert_eq!(s.total_practices, 2);
        assert!((s.completion_rate - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.average_rating, Some(4.5));
        assert_eq!(s.session_minutes, 30);
        assert_eq!((s.current_streak_days, s.longest_streak_days), (2, 2));
        assert_eq!(
            s.top_categories,
            [CategoryCount {
                category: "calm".into(),
                count: 1
            }]
        );
        let trend: Vec<(NaiveDate, i64, i64, i64)> = s
            .weekly_trend
            .iter()
            .map(|w| (w.week_start, w.sessions, w.completed, w.minutes))
            .collect();
        assert_eq!(
            trend,
            [(day(2024, 1, 1), 1, 0, 10), (day(2024, 1, 8), 2, 2, 20)]
        );
        assert_eq!(s.mood_improvement, Some(3.0));
        assert!((s.learning_velocity - 1.0).abs() < 1e-12, "2 in 2 weeks");
    }

    #[test]
    fn no_entries_give_zeros_and_nones() {
        let u = UserId::new();
        let r = DateRange {
            from: at(day(2024, 1, 1), 0),
            to: at(day(2024, 1, 8), 0),
        };
        let s = user_statistics(u, &r, [], |_| None);
        assert_eq!(s.total_sessions, 0);
        assert_eq!(s.completion_rate, 0.0);
        assert_eq!((s.average_rating, s.mood_improvement), (None, None));
        assert!(s.weekly_trend.is_empty() && s.top_categories.is_empty());
        assert_eq!(s.learning_velocity, 0.0);
    }
}
