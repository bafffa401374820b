//! [`Recommendation`]: practices to suggest to a user.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::statistics::top_categories;
use crate::domain::{DifficultyLevel, Practice, PracticeId, ProgressEntry};

/// A practice suggested to a user.
///
/// Scoring: practices the user completed in the last 30 days are left out; the rest
/// score 2 if their category is among the user's three most practised (all time) and
/// 1 more if their difficulty fits the user's level (beginner under 10 completed
/// practices, intermediate under 50, advanced from 50); ordered by score, then title.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The practice.
    pub practice_id: PracticeId,
    /// Its title.
    pub title: String,
    /// Its category.
    pub category: String,
    /// Its difficulty.
    pub difficulty: DifficultyLevel,
    /// The score (0–3).
    pub score: i32,
    /// Why it was suggested, in words.
    pub reason: String,
}

/// Practices completed this many days back or less are not suggested again.
const RECENT_DAYS: i64 = 30;

/// The user's level from their count of completed practices.
pub(crate) fn level(completed: i64) -> DifficultyLevel {
    match completed {
        n if n < 10 => DifficultyLevel::Beginner,
        n if n < 50 => DifficultyLevel::Intermediate,
        _ => DifficultyLevel::Advanced,
    }
}

/// The recommendation's reason, in words, from its score parts: whether the practice
/// is in one of the user's top categories (`category`), whether it fits their level
/// (`level`).
pub(crate) fn recommendation_reason(
    in_top: bool,
    fits: bool,
    category: &str,
    level: &str,
) -> String {
    match (in_top, fits) {
        (true, true) => format!("in your favourite category {category}, at your {level} level"),
        (true, false) => format!("in your favourite category {category}"),
        (false, true) => format!("suits your {level} level"),
        (false, false) => "something new to try".to_string(),
    }
}

/// Up to `limit` practices of `catalogue` to suggest, at `now`, to the user whose
/// progress entries (all of them) are `entries`; `category` gives a practice's
/// category. Scoring and order as documented on [`Recommendation`].
pub(crate) fn recommend<'p>(
    catalogue: impl IntoIterator<Item = &'p Practice>,
    entries: impl IntoIterator<Item = &'p ProgressEntry>,
    category: impl Fn(PracticeId) -> Option<&'p str>,
    now: DateTime<Utc>,
    limit: u32,
) -> Vec<Recommendation> {
    let completed: Vec<&ProgressEntry> = entries.into_iter().filter(|e| e.completed).collect();
    let cutoff = now - Duration::days(RECENT_DAYS);
    let recent: Vec<PracticeId> = completed
        .iter()
        .filter(|e| e.created_at >= cutoff)
        .filter_map(|e| e.practice_id)
        .collect();
    let n_done = completed.iter().filter(|e| e.practice_id.is_some()).count() as i64;
    let level = level(n_done);
    let top: Vec<String> =
        top_categories(completed.iter().filter_map(|e| category(e.practice_id?)))
            .into_iter()
            .map(|c| c.category)
            .collect();
    let mut v: Vec<Recommendation> = catalogue
        .into_iter()
        .filter(|p| !recent.contains(&p.id))
        .map(|p| {
            let in_top = top.contains(&p.category);
            let fits = p.difficulty == level;
            Recommendation {
                practice_id: p.id,
                title: p.title.clone(),
                category: p.category.clone(),
                difficulty: p.difficulty,
                score: 2 * i32::from(in_top) + i32::from(fits),
                reason: recommendation_reason(in_top, fits, &p.category, level.as_str()),
            }
        })
        .collect();
    v.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then_with(|| a.title.cmp(&b.title))
            .then_with(|| a.practice_id.cmp(&b.practice_id))
    });
    v.truncate(limit as usize);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ProgressId, UserId};

    fn practice(title: &str, category: &str, difficulty: DifficultyLevel) -> Practice {
        let t = Utc::now();
        Practice {
            id: PracticeId::new(),
            title: title.into(),
            description: String::new(),
            category: category.into(),
            difficulty,
            tags: Vec::new(),
            duration_minutes: 5,
            created_at: t,
            updated_at: t,
        }
    }

    fn done(p: &Practice, at: DateTime<Utc>) -> ProgressEntry {
        ProgressEntry {
            id: ProgressId::new(),
            user_id: UserId::new(),
            practice_id: Some(p.id),
            goal_id: None,
            learning_path_id: None,
            duration_minutes: 5,
            rating: None,
            mood_before: None,
            mood_after: None,
            notes: None,
            completed: true,
            completed_at: Some(at),
            created_at: at,
        }
    }

    #[test]
    fn levels_by_completed_practices() {
        assert_eq!(level(0), DifficultyLevel::Beginner);
        assert_eq!(level(9), DifficultyLevel::Beginner);
        assert_eq!(level(10), DifficultyLevel::Intermediate);
        assert_eq!(level(49), DifficultyLevel::Intermediate);
        assert_eq!(level(50), DifficultyLevel::Advanced);
    }

    #[test]
    fn reasons_in_words() {
        assert_eq!(
            recommendation_reason(true, true, "calm", "beginner"),
            "in your favourite category calm, at your beginner level"
        );
        assert_eq!(
            recommendation_reason(true, false, "calm", "beginner"),
            "in your favourite category calm"
        );
        assert_eq!(
            recommendation_reason(false, true, "calm", "beginner"),
            "suits your beginner level"
        );
        assert_eq!(
            recommendation_reason(false, false, "calm", "beginner"),
            "something new to try"
        );
    }

    #[test]
    fn scores_leave_out_recent_practices_and_order_by_score_then_title() {
        use DifficultyLevel::*;
        let now = Utc::now();
        let old_calm = practice("Breathe", "calm", Advanced);
        let recent_calm = practice("Stretch", "calm", Beginner);
        let calm_beginner = practice("Walk", "calm", Beginner);
        let talk_beginner = practice("Listen", "talk", Beginner);
        let talk_hard = practice("Argue", "talk", Advanced);
        let catalogue = [
            &old_calm,
            &recent_calm,
            &calm_beginner,
            &talk_beginner,
            &talk_hard,
        ];
        let mut entries = vec![
            done(&old_calm, now - Duration::days(RECENT_DAYS + 1)),
            done(&recent_calm, now - Duration::days(1)),
        ];
        let mut not_done = done(&talk_hard, now);
        not_done.completed = false;
        entries.push(not_done);
        let category = |id: PracticeId| {
            catalogue
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.category.as_str())
        };
        let recs = recommend(catalogue, &entries, category, now, 50);
        let got: Vec<(&str, i32)> = recs.iter().map(|r| (r.title.as_str(), r.score)).collect();
        assert_eq!(
            got,
            [("Walk", 3), ("Breathe", 2), ("Listen", 1), ("Argue", 0)]
        );
        assert_eq!(
            recs[0].reason,
            "in your favourite category calm, at your beginner level"
        );
        assert_eq!(recs[3].reason, "something new to try");
        assert_eq!(recommend(catalogue, &entries, category, now, 2).len(), 2);
    }
}
