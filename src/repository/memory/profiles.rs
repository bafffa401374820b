//! Profiles: one per user, emails unique regardless of case.

use super::{InMemoryRepository, not_found, now};
use crate::domain::*;
use crate::error::{Error, Result};

pub(super) fn create_profile(
    repo: &InMemoryRepository,
    actor: Actor,
    new: NewProfile,
) -> Result<Profile> {
    new.validate()?;
    actor.check_write(new.id)?;
    if actor != Actor::Service && new.subscription_tier != SubscriptionTier::Free {
        return Err(Error::forbidden("only the service may set a paid tier"));
    }
    let mut s = repo.write();
    if s.profiles.contains_key(&new.id) {
        return Err(Error::Conflict {
            what: "a profile with this id exists".into(),
        });
    }
    let key = new.email.to_lowercase();
    if s.emails.contains_key(&key) {
        return Err(Error::Conflict {
            what: "email already in use".into(),
        });
    }
    let t = now();
    let p = Profile {
        id: new.id,
        email: new.email,
        display_name: new.display_name,
        subscription_tier: new.subscription_tier,
        preferences: new.preferences,
        created_at: t,
        updated_at: t,
    };
    s.emails.insert(key, p.id);
    s.profiles.insert(p.id, p.clone());
    Ok(p)
}

pub(super) fn get_profile(repo: &InMemoryRepository, actor: Actor, id: UserId) -> Result<Profile> {
    let s = repo.read();
    match s.profiles.get(&id) {
        Some(p) if actor.may_access(id) => Ok(p.clone()),
        _ => Err(not_found("profile")),
    }
}

pub(super) fn update_profile(
    repo: &InMemoryRepository,
    actor: Actor,
    id: UserId,
    u: ProfileUpdate,
) -> Result<Profile> {
    u.validate()?;
    if u.subscription_tier.is_some() {
        actor.require_service("only the service may change the subscription tier")?;
    }
    let mut s = repo.write();
    let mut p = match s.profiles.get(&id) {
        Some(p) if actor.may_access(id) => p.clone(),
        _ => return Err(not_found("profile")),
    };
    if let Some(e) = u.email {
        let key = e.to_lowercase();
        if let Some(owner) = s.emails.get(&key)
            && *owner != id
        {
            return Err(Error::Conflict {
                what: "email already in use".into(),
            });
        }
        s.emails.remove(&p.email.to_lowercase());
        s.emails.insert(key, id);
        p.email = e;
    }
    if let Some(n) = u.display_name {
        p.display_name = n;
    }
    if let Some(t) = u.subscription_tier {
        p.subscription_tier = t;
    }
    if let Some(pr) = u.preferences {
        p.preferences = pr;
    }
    p.updated_at = now();
    s.profiles.insert(id, p.clone());
    Ok(p)
}
