//! The practice catalogue: creation, search and filters.

use kasama::prelude::*;

use super::{Repo, practice, user};

pub(super) async fn practices(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let breathe = practice(
        &repo,
        "Breathing together",
        "mindfulness",
        DifficultyLevel::Beginner,
        &["Calm", "breath"],
    )
    .await;
    let listen = practice(
        &repo,
        "Active listening",
        "communication",
        DifficultyLevel::Intermediate,
        &["listening"],
    )
    .await;
    let fight = practice(
        &repo,
        "Fair fighting rules",
        "conflict",
        DifficultyLevel::Advanced,
        &["conflict", "calm"],
    )
    .await;
    assert_eq!(breathe.tags, ["calm", "breath"]);
    assert!(
        repo.create_practice(
            ua,
            NewPractice {
                title: "x".into(),
                description: String::new(),
                category: "c".into(),
                difficulty: DifficultyLevel::Beginner,
                tags: vec![],
                duration_minutes: 5,
            }
        )
        .await
        .unwrap_err()
        .is_forbidden()
    );
    assert_eq!(repo.get_practice(ua, listen.id).await.unwrap(), listen);

    let ids = |v: Vec<Practice>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    // Stemmed full-text: "listen" finds "listening".
    assert_eq!(
        ids(repo
            .search_practices(ua, "listen", Page::default())
            .await
            .unwrap()),
        [listen.id]
    );
    // Tags are searched; title matches come first, then by title.
    assert_eq!(
        ids(repo
            .search_practices(ua, "calm", Page::default())
            .await
            .unwrap()),
        [breathe.id, fight.id]
    );
    assert_eq!(
        ids(repo
            .search_practices(ua, "FAIR FIGHT", Page::default())
            .await
            .unwrap()),
        [fight.id]
    );
    assert_eq!(
        ids(repo
            .search_practices(ua, "ing toge", Page::default())
            .await
            .unwrap()),
        [breathe.id]
    );
    assert_eq!(
        ids(repo
            .search_practices(ua, "100%_", Page::default())
            .await
            .unwrap()),
        []
    );
    assert_eq!(
        ids(repo
            .search_practices(ua, "couples", Page::first(2))
            .await
            .unwrap()),
        [listen.id, breathe.id]
    );

    let all = repo
        .list_practices(ua, &PracticeFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(ids(all), [listen.id, breathe.id, fight.id]);
    let f = PracticeFilter {
        category: Some("conflict".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list_practices(ua, &f, Page::default()).await.unwrap()),
        [fight.id]
    );
    let f = PracticeFilter {
        difficulty: Some(DifficultyLevel::Beginner),
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list_practices(ua, &f, Page::default()).await.unwrap()),
        [breathe.id]
    );
    let f = PracticeFilter {
        tag: Some("CALM".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list_practices(ua, &f, Page::default()).await.unwrap()),
        [breathe.id, fight.id]
    );
    assert!(
        repo.get_practice(ua, PracticeId::new())
            .await
            .unwrap_err()
            .is_not_found()
    );
}
