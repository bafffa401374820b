//! Bearer tokens: [`JwtConfig`] (the HS256 key, at least 32 bytes, and the `iss`/`aud`
//! tokens must carry when configured) signs and checks them; [`Claims`] is what kasama
//! reads from one. Who may call what is decided in [`auth`](super::auth).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::domain::{SubscriptionTier, UserId};
use crate::error::{Error, Result};

/// The `role` claim that makes a token an operator's (see [`Claims::role`]).
pub const OPERATOR_ROLE: &str = "operator";

/// How tokens are signed and checked: HS256 with a secret of at least
/// [`JwtConfig::MIN_SECRET_LEN`] bytes; `exp` required, `nbf` checked when present,
/// `iss` and `aud` required and checked when configured; 60 s of clock leeway.
///
/// Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct JwtConfig {
    secret: Arc<[u8]>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &"***")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl JwtConfig {
    /// The shortest secret accepted: 32 bytes (256 bits, HS256's key size).
    pub const MIN_SECRET_LEN: usize = 32;

    /// A config signing and checking with `secret`; no `iss`/`aud` requirement.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `jwt_secret`) for a secret shorter than
    /// [`Self::MIN_SECRET_LEN`] bytes; the message gives the length, never the secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self> {
        let secret = secret.into();
        if secret.len() < Self::MIN_SECRET_LEN {
            return Err(Error::invalid(
                "jwt_secret",
                format!(
                    "must be at least {} bytes, got {} (generate one with `openssl rand -base64 48`)",
                    Self::MIN_SECRET_LEN,
                    secret.len()
                ),
            ));
        }
        Ok(Self {
            secret: secret.into(),
            issuer: None,
            audience: None,
        })
    }

    /// From the environment: `KASAMA_JWT_SECRET` (required, at least 32 bytes), and
    /// `KASAMA_JWT_ISSUER` / `KASAMA_JWT_AUDIENCE` when set and not empty.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `KASAMA_JWT_SECRET` when it is unset, empty or
    /// too short.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let Some(secret) = var("KASAMA_JWT_SECRET") else {
            return Err(Error::invalid(
                "KASAMA_JWT_SECRET",
                format!(
                    "is not set: set it to a random secret of at least {} bytes (e.g. `openssl rand -base64 48`)",
                    Self::MIN_SECRET_LEN
                ),
            ));
        };
        let mut c = Self::new(secret).map_err(|e| match e {
            Error::InvalidInput { reason, .. } => Error::invalid("KASAMA_JWT_SECRET", reason),
            other => other,
        })?;
        c.issuer = var("KASAMA_JWT_ISSUER");
        c.audience = var("KASAMA_JWT_AUDIENCE");
        Ok(c)
    }

    /// Tokens must carry `iss` equal to `issuer`.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Tokens must carry `aud` equal to (or, as a list, containing) `audience`.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Signs a token for `user`, valid for `ttl`, with the configured `iss`/`aud`. It
    /// carries no plan: the server looks the user's tier up (and caches it, see
    /// [`AuthConfig`](super::AuthConfig)).
    pub fn token(&self, user: UserId, ttl: Duration) -> String {
        self.sign(&user.to_string(), None, None, ttl)
    }

    /// Signs a token for `user` that states their plan (claim `tier`: `"free"`,
    /// `"premium"` or `"enterprise"`), valid for `ttl`: the server rate-limits the user
    /// by it without reading their profile. Give it a `ttl` no longer than a plan
    /// change may take to apply.
    pub fn token_with_tier(&self, user: UserId, tier: SubscriptionTier, ttl: Duration) -> String {
        self.sign(&user.to_string(), None, Some(tier), ttl)
    }

    /// Signs an operator's token (`role: "operator"`, `sub` = `name`), valid for
    /// `ttl`: it sees `/health`'s details and `/api/metrics`. It is not a user's token
    /// (its `sub` is not a user id), so the user endpoints refuse it.
    pub fn operator_token(&self, name: &str, ttl: Duration) -> String {
        self.sign(name, Some(OPERATOR_ROLE), None, ttl)
    }

    fn sign(
        &self,
        sub: &str,
        role: Option<&str>,
        tier: Option<SubscriptionTier>,
        ttl: Duration,
    ) -> String {
        let now = chrono::Utc::now();
        let exp = exp_after(now, ttl);
        let mut claims = json!({ "sub": sub, "exp": exp, "iat": now.timestamp().max(0) });
        if let Some(r) = role {
            claims["role"] = json!(r);
        }
        if let Some(t) = tier {
            claims["tier"] = json!(t);
        }
        if let Some(i) = &self.issuer {
            claims["iss"] = json!(i);
        }
        if let Some(a) = &self.audience {
            claims["aud"] = json!(a);
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.secret),
        )
        .expect("HS256 signing of a JSON object does not fail")
    }

    /// Checks `token` and returns its claims.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for a token that is malformed, badly signed, expired, not
    /// yet valid (`nbf`), lacks the configured `iss`/`aud`, or names an unknown `tier`.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        self.verify_full(token).map(|v| v.claims)
    }

    /// [`JwtConfig::verify`], with the `tier` claim.
    pub(super) fn verify_full(&self, token: &str) -> Result<Verified> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(i) => {
                v.set_issuer(&[i]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.audience {
            Some(a) => {
                v.set_audience(&[a]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        jsonwebtoken::decode::<Verified>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(&self.secret),
            &v,
        )
        .map(|d| d.claims)
        .map_err(|_| Error::forbidden("invalid or expired token"))
    }
}

/// The claims kasama reads from a token (others are ignored; `iss`/`aud` are checked
/// by [`JwtConfig::verify`]).
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Claims {
    /// The user's id (an operator's name for operator tokens).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not valid before, seconds since the epoch (checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// `"operator"` for a token that may read operational details (`/health`'s
    /// checks, `/api/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A checked token's claims, with the plan it states (claim `tier`, if any).
#[derive(Debug, Deserialize)]
pub(super) struct Verified {
    #[serde(flatten)]
    pub(super) claims: Claims,
    #[serde(default)]
    pub(super) tier: Option<SubscriptionTier>,
}

impl Claims {
    /// Whether the token is an operator's.
    pub fn is_operator(&self) -> bool {
        self.role.as_deref() == Some(OPERATOR_ROLE)
    }
}

/// Signs a token for `user` valid for `ttl` with `secret` (no `iss`/`aud`; for tests
/// and tools — servers use [`JwtConfig::token`]).
pub fn token(secret: &[u8], user: UserId, ttl: Duration) -> String {
    let exp = exp_after(chrono::Utc::now(), ttl) as u64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims {
            sub: user.to_string(),
            exp,
            nbf: None,
            role: None,
        },
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing does not fail")
}

/// `exp` (seconds since the epoch, at least 0) of a token signed at `now` for `ttl`.
/// A ttl past what the calendar holds is "never": the latest date, not a panic (nor a
/// token that expires at once).
fn exp_after(now: chrono::DateTime<chrono::Utc>, ttl: Duration) -> i64 {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(ttl)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        .timestamp()
        .max(0)
}
