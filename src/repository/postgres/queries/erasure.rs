//! Erasing a user, every table in one transaction.

use crate::domain::*;
use crate::error::Result;
use crate::repository::postgres::{PgRepository, db_err};

pub(super) async fn erase_user(
    pg: &PgRepository,
    actor: Actor,
    user: UserId,
) -> Result<ErasureReport> {
    actor.require_service("only the service may erase a user")?;
    let mut client = pg.client().await?;
    let tx = PgRepository::begin(&mut client, actor).await?;
    // Locks in the order every writer and partition maintenance take them
    // (assessments, then answers), so erasing never deadlocks with a move; then the
    // profile row, so the user's concurrent writes (whose foreign-key checks share-lock
    // it) wait and then fail, and the counts below are every row that went.
    tx.batch_execute("LOCK TABLE assessments, assessment_answers IN ROW EXCLUSIVE MODE")
        .await
        .map_err(db_err)?;
    let lock = tx
        .prepare_cached("SELECT 1 FROM profiles WHERE id = $1 FOR UPDATE")
        .await
        .map_err(db_err)?;
    tx.execute(&lock, &[&user.0]).await.map_err(db_err)?;
    // A message is added under a lock on its conversation's row: lock them all, so a
    // message being added now is either counted below or refused.
    let lock = tx
        .prepare_cached("SELECT 1 FROM conversations WHERE user_id = $1 FOR UPDATE")
        .await
        .map_err(db_err)?;
    tx.execute(&lock, &[&user.0]).await.map_err(db_err)?;
    let mut counts = [0u64; 10];
    // Children first, so no ON DELETE action turns a delete into an update event.
    for (i, table) in [
        "assessment_answers",
        "assessments",
        "progress",
        "goals",
        "learning_paths",
        "notifications",
        "ai_interactions",
        "conversation_messages",
        "conversations",
        "profiles",
    ]
    .iter()
    .enumerate()
    {
        let col = if *table == "profiles" {
            "id"
        } else {
            "user_id"
        };
        let stmt = tx
            .prepare_cached(&format!("DELETE FROM {table} WHERE {col} = $1"))
            .await
            .map_err(db_err)?;
        counts[i] = tx.execute(&stmt, &[&user.0]).await.map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    let [
        answers,
        assessments,
        progress,
        goals,
        learning_paths,
        notifications,
        ai_interactions,
        conversation_messages,
        conversations,
        profiles,
    ] = counts;
    Ok(ErasureReport {
        profiles,
        assessments,
        answers,
        goals,
        progress,
        learning_paths,
        notifications,
        ai_interactions,
        conversations,
        conversation_messages,
    })
}
