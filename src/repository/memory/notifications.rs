//! Notifications.

use std::collections::BTreeSet;

use super::{InMemoryRepository, newest_first, not_found, now, page};
use crate::domain::*;
use crate::error::Result;
use crate::feed::{ChangeOp as Op, ChangeTable as T};
use crate::repository::checks;

pub(super) fn create_notification(
    repo: &InMemoryRepository,
    actor: Actor,
    new: NewNotification,
) -> Result<Notification> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let mut s = repo.write();
    s.require_profile(new.user_id)?;
    let n = Notification {
        id: NotificationId::new(),
        user_id: new.user_id,
        kind: new.kind,
        priority: new.priority,
        title: new.title,
        body: new.body,
        data: new.data,
        read: false,
        read_at: None,
        created_at: now(),
    };
    s.notifications.insert(n.id, n.clone());
    repo.emit(T::Notifications, Op::Insert, n.id.0, n.user_id);
    Ok(n)
}

pub(super) fn get_notification(
    repo: &InMemoryRepository,
    actor: Actor,
    id: NotificationId,
) -> Result<Notification> {
    let s = repo.read();
    match s.notifications.get(&id) {
        Some(n) if actor.may_access(n.user_id) => Ok(n.clone()),
        _ => Err(not_found("notification")),
    }
}

pub(super) fn list_unread_notifications(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    p: Page,
) -> Result<Vec<Notification>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    let s = repo.read();
    let mut v: Vec<Notification> = s
        .notifications
        .values()
        .filter(|n| n.user_id == user && !n.read)
        .cloned()
        .collect();
    newest_first(&mut v, |n| (n.created_at, n.id.0));
    Ok(page(v.into_iter(), p))
}

pub(super) fn mark_notifications_read(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    ids: &[NotificationId],
) -> Result<u64> {
    checks::note_ids(ids)?;
    actor.check_write(user)?;
    let mut s = repo.write();
    let t = now();
    let mut n = 0;
    let unique: BTreeSet<&NotificationId> = ids.iter().collect();
    for id in unique {
        if let Some(x) = s.notifications.get_mut(id)
            && x.user_id == user
            && !x.read
        {
            x.read = true;
            x.read_at = Some(t);
            n += 1;
            repo.emit(T::Notifications, Op::Update, id.0, user);
        }
    }
    Ok(n)
}
