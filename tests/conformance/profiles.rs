//! Profiles: creation, reading and updates, by their owner and by nobody else.

use kasama::prelude::*;
use serde_json::json;

use super::{Repo, S};

pub(super) async fn profiles(repo: Repo) {
    let a = UserId::new();
    let b = UserId::new();
    let ua = Actor::User(a);
    let p = repo
        .create_profile(ua, NewProfile::new(a, "Ana@Example.com", "Ana"))
        .await
        .unwrap();
    assert_eq!(p.id, a);
    assert_eq!(p.subscription_tier, SubscriptionTier::Free);
    assert_eq!(repo.get_profile(ua, a).await.unwrap(), p);

    // Another user's profile: not creatable by a, not visible to a.
    assert!(
        repo.create_profile(ua, NewProfile::new(b, "b@example.com", "B"))
            .await
            .unwrap_err()
            .is_forbidden()
    );
    repo.create_profile(S, NewProfile::new(b, "b@example.com", "B"))
        .await
        .unwrap();
    assert!(repo.get_profile(ua, b).await.unwrap_err().is_not_found());

    // A user cannot buy a tier by writing it.
    let mut premium = NewProfile::new(UserId::new(), "c@example.com", "C");
    premium.subscription_tier = SubscriptionTier::Premium;
    assert!(
        repo.create_profile(Actor::User(premium.id), premium.clone())
            .await
            .unwrap_err()
            .is_forbidden()
    );
    let up = ProfileUpdate {
        subscription_tier: Some(SubscriptionTier::Premium),
        ..Default::default()
    };
    assert!(
        repo.update_profile(ua, a, up.clone())
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert_eq!(
        repo.update_profile(S, a, up)
            .await
            .unwrap()
            .subscription_tier,
        SubscriptionTier::Premium
    );

    // Conflicts: same id, same email in another case.
    let e = repo
        .create_profile(S, NewProfile::new(a, "x@example.com", "X"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    let e = repo
        .create_profile(
            S,
            NewProfile::new(UserId::new(), "ana@EXAMPLE.com", "Other"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    assert!(
        !e.to_string().contains("ana@"),
        "no other user's data in errors: {e}"
    );

    let updated = repo
        .update_profile(
            ua,
            a,
            ProfileUpdate {
                display_name: Some("Ana Maria".into()),
                preferences: Some(json!({"theme": "dark"})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.display_name, "Ana Maria");
    assert_eq!(updated.preferences, json!({"theme": "dark"}));
    assert_eq!(updated.email, "Ana@Example.com");
    assert!(updated.updated_at >= p.updated_at);
    let e = repo
        .update_profile(
            ua,
            a,
            ProfileUpdate {
                email: Some("B@example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    assert!(
        repo.update_profile(
            ua,
            b,
            ProfileUpdate {
                display_name: Some("Hijack".into()),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .is_not_found()
    );
    assert_eq!(repo.get_profile(S, b).await.unwrap().display_name, "B");
}
