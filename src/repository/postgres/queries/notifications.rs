//! Notifications.

use uuid::Uuid;

use super::{limit, who};
use crate::domain::*;
use crate::error::Result;
use crate::repository::checks;
use crate::repository::postgres::PgRepository;
use crate::repository::postgres::rows::*;

pub(super) async fn create_notification(
    pg: &PgRepository,
    actor: Actor,
    new: NewNotification,
) -> Result<Notification> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let sql = format!(
        "INSERT INTO notifications (id, user_id, kind, priority, title, body, data)
         VALUES ($1, $2, $3::text::notification_type, $4::text::priority_level, $5, $6, $7)
         RETURNING {NOTIFICATION_COLS}"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &Uuid::new_v4(),
                &new.user_id.0,
                &new.kind.as_str(),
                &new.priority.as_str(),
                &new.title,
                &new.body,
                &new.data,
            ],
        )
        .await?;
    one(&r, "notification", notification)
}

pub(super) async fn get_notification(
    pg: &PgRepository,
    actor: Actor,
    id: NotificationId,
) -> Result<Notification> {
    let sql = format!(
        "SELECT {NOTIFICATION_COLS} FROM notifications
         WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
    );
    let r = pg.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
    one(&r, "notification", notification)
}

pub(super) async fn list_unread_notifications(
    pg: &PgRepository,
    actor: Actor,
    user: UserId,
    p: Page,
) -> Result<Vec<Notification>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    let sql = format!(
        "SELECT {NOTIFICATION_COLS} FROM notifications WHERE user_id = $1 AND NOT read
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    );
    let (l, o) = limit(p);
    let r = pg.scoped(actor, &sql, &[&user.0, &l, &o]).await?;
    all(&r, notification)
}

pub(super) async fn mark_notifications_read(
    pg: &PgRepository,
    actor: Actor,
    user: UserId,
    ids: &[NotificationId],
) -> Result<u64> {
    checks::note_ids(ids)?;
    actor.check_write(user)?;
    let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
    let r = pg
        .scoped(
            actor,
            "UPDATE notifications SET read = true, read_at = now()
             WHERE user_id = $1 AND id = ANY($2) AND NOT read RETURNING 1",
            &[&user.0, &ids],
        )
        .await?;
    Ok(r.len() as u64)
}
