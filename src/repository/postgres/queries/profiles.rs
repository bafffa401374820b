//! Profiles.

use super::who;
use crate::domain::*;
use crate::error::{Error, Result};
use crate::repository::postgres::PgRepository;
use crate::repository::postgres::rows::*;

pub(super) async fn create_profile(
    pg: &PgRepository,
    actor: Actor,
    new: NewProfile,
) -> Result<Profile> {
    new.validate()?;
    actor.check_write(new.id)?;
    if actor != Actor::Service && new.subscription_tier != SubscriptionTier::Free {
        return Err(Error::forbidden("only the service may set a paid tier"));
    }
    let sql = format!(
        "INSERT INTO profiles (id, email, display_name, subscription_tier, preferences)
         VALUES ($1, $2, $3, $4::text::subscription_tier, $5) RETURNING {PROFILE_COLS}"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &new.id.0,
                &new.email,
                &new.display_name,
                &new.subscription_tier.as_str(),
                &new.preferences,
            ],
        )
        .await?;
    one(&r, "profile", profile)
}

pub(super) async fn get_profile(pg: &PgRepository, actor: Actor, id: UserId) -> Result<Profile> {
    let sql = format!(
        "SELECT {PROFILE_COLS} FROM profiles WHERE id = $1 AND ($2::uuid IS NULL OR id = $2)"
    );
    let r = pg.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
    one(&r, "profile", profile)
}

pub(super) async fn update_profile(
    pg: &PgRepository,
    actor: Actor,
    id: UserId,
    u: ProfileUpdate,
) -> Result<Profile> {
    u.validate()?;
    if u.subscription_tier.is_some() {
        actor.require_service("only the service may change the subscription tier")?;
    }
    let sql = format!(
        "UPDATE profiles SET email = coalesce($2, email),
            display_name = coalesce($3, display_name),
            subscription_tier = coalesce($4::text::subscription_tier, subscription_tier),
            preferences = coalesce($5, preferences)
         WHERE id = $1 AND ($6::uuid IS NULL OR id = $6) RETURNING {PROFILE_COLS}"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &id.0,
                &u.email,
                &u.display_name,
                &u.subscription_tier.map(|t| t.as_str()),
                &u.preferences,
                &who(actor),
            ],
        )
        .await?;
    one(&r, "profile", profile)
}
