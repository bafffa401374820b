//! The connection string: its TLS keys (`sslmode`, `sslrootcert`, and the refused
//! client-certificate ones) taken out of the URL or key=value form, the rest left for
//! tokio-postgres; and the string shown without its password.

use crate::error::{Error, Result};

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub(super) fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => Self::Disable,
            // libpq's `allow` (plaintext first, TLS if refused) is weaker than `prefer`;
            // taken as `prefer`, which never does less.
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => {
                return Err(Error::invalid(
                    "sslmode",
                    "must be disable, prefer, require, verify-ca or verify-full",
                ));
            }
        })
    }
}

/// The TLS settings taken out of a connection string, and the rest of it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Split {
    pub(super) rest: String,
    pub(super) mode: Option<String>,
    pub(super) root: Option<String>,
}

/// Keys this module handles or refuses; everything else goes to tokio-postgres.
fn take(key: &str) -> bool {
    matches!(
        key,
        "sslmode" | "sslrootcert" | "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir"
    )
}

fn record(split: &mut Split, key: &str, value: String) -> Result<()> {
    match key {
        // As libpq: a key given twice takes its last value.
        "sslmode" => split.mode = Some(value),
        "sslrootcert" => split.root = Some(value),
        "sslcrl" | "sslcrldir" => {
            return Err(Error::invalid(
                key.to_string(),
                "certificate revocation lists are not supported",
            ));
        }
        _ => {
            return Err(Error::invalid(
                key.to_string(),
                "client certificates are not supported",
            ));
        }
    }
    Ok(())
}

pub(super) fn bad_url() -> Error {
    Error::invalid("url", "not a valid PostgreSQL connection string")
}

/// Takes the TLS keys out of `url`, in URL or key=value form. Never echoes the string
/// (it may hold a password) in an error.
pub(super) fn split(url: &str) -> Result<Split> {
    let mut out = Split {
        rest: String::new(),
        mode: None,
        root: None,
    };
    let prefix = ["postgresql://", "postgres://"]
        .into_iter()
        .find(|p| url.starts_with(p));
    if let Some(prefix) = prefix {
        // tokio-postgres reads credentials up to the first '@' (a '?' inside a password
        // must be percent-encoded in any case); the query starts at the next '?'.
        let after = &url[prefix.len()..];
        let from = after.find('@').map_or(0, |i| i + 1);
        let Some(q) = after[from..].find('?').map(|i| prefix.len() + from + i) else {
            out.rest = url.to_string();
            return Ok(out);
        };
        let mut kept = Vec::new();
        for piece in url[q + 1..].split('&') {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            let key = percent_encoding::percent_decode_str(k)
                .decode_utf8()
                .map_err(|_| bad_url())?;
            if take(&key) {
                let value = percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .map_err(|_| bad_url())?;
                record(&mut out, &key, value.into_owned())?;
            } else {
                kept.push(piece);
            }
        }
        out.rest = url[..q].to_string();
        if !kept.is_empty() {
            out.rest.push('?');
            out.rest.push_str(&kept.join("&"));
        }
        return Ok(out);
    }
    let mut kept = Vec::new();
    for (key, value) in key_values(url)? {
        if take(&key) {
            record(&mut out, &key, value)?;
        } else {
            kept.push((key, value));
        }
    }
    out.rest = kept
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(out)
}

/// The pairs of a key=value connection string, read as tokio-postgres (and libpq)
/// read them: `key = value`, values plain or single-quoted, a backslash escapes the
/// next character.
fn key_values(s: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if it.peek().is_some() {
                return Err(bad_url());
            }
            return Ok(pairs);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(bad_url());
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    None => return Err(bad_url()),
                    Some('\'') => break,
                    Some('\\') => value.extend(it.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next());
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return Err(bad_url());
            }
        }
        pairs.push((key, value));
    }
}

/// `url` with its password (in the user info, or a `password` parameter) replaced by
/// `***`; a string that cannot be read is not shown at all.
pub(crate) fn redact(url: &str) -> String {
    const HIDDEN: &str = "***";
    let prefix = ["postgresql://", "postgres://"]
        .into_iter()
        .find(|p| url.starts_with(p));
    if let Some(prefix) = prefix {
        // First every `password=` parameter, wherever a '?' or '&' starts one (even
        // before an '@' that only looks like the end of the user info)...
        let params: Vec<String> = url[prefix.len()..]
            .split('&')
            .map(|piece| {
                let (head, param) = match piece.split_once('?') {
                    Some((h, p)) => (Some(h), p),
                    None => (None, piece),
                };
                let (k, _) = param.split_once('=').unwrap_or((param, ""));
                let param =
                    if percent_encoding::percent_decode_str(k).decode_utf8_lossy() == "password" {
                        format!("{k}={HIDDEN}")
                    } else {
                        param.to_string()
                    };
                match head {
                    Some(h) => format!("{h}?{param}"),
                    None => param,
                }
            })
            .collect();
        let after = params.join("&");
        // ...then everything between the user name and the first '@', as
        // tokio-postgres reads the user info.
        let mut out = prefix.to_string();
        match after.split_once('@') {
            Some((user_info, rest)) => {
                match user_info.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(HIDDEN);
                    }
                    None => out.push_str(user_info),
                }
                out.push('@');
                out.push_str(rest);
            }
            None => out.push_str(&after),
        }
        return out;
    }
    match key_values(url) {
        Ok(pairs) => pairs
            .iter()
            .map(|(k, v)| {
                if k == "password" {
                    format!("{k}={HIDDEN}")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "<unreadable connection string>".into(),
    }
}

/// Shows a connection string in `Debug` output without its password.
pub(crate) struct RedactedUrl<'a>(pub(crate) &'a str);

impl std::fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&redact(self.0), f)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn sp(url: &str) -> Split {
        split(url).unwrap()
    }

    #[test]
    fn url_form_loses_its_tls_keys_and_keeps_the_rest() {
        let s = sp(
            "postgres://u:p%3Fw@db.example.com:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        );
        assert_eq!(
            s.rest,
            "postgres://u:p%3Fw@db.example.com:5432/app?application_name=x&connect_timeout=5"
        );
        assert_eq!(s.mode.as_deref(), Some("verify-full"));
        assert_eq!(s.root.as_deref(), Some("/etc/ca.pem"));
        let s = sp("postgresql://h/db?sslmode=require");
        assert_eq!(s.rest, "postgresql://h/db");
        assert_eq!(s.mode.as_deref(), Some("require"));
        let s = sp("postgres://h/db");
        assert_eq!(s.rest, "postgres://h/db");
        assert_eq!(s.mode, None);
    }

    #[test]
    fn key_value_form_loses_its_tls_keys_and_keeps_the_rest() {
        let s = sp(
            r"host=h port = 5433 user=u password='it\'s a \\ secret' sslmode=verify-ca sslrootcert='/a b/ca.pem' dbname=app",
        );
        assert_eq!(s.mode.as_deref(), Some("verify-ca"));
        assert_eq!(s.root.as_deref(), Some("/a b/ca.pem"));
        assert_eq!(
            s.rest,
            r"host='h' port='5433' user='u' password='it\'s a \\ secret' dbname='app'"
        );
        let c = tokio_postgres::Config::from_str(&s.rest).unwrap();
        assert_eq!(c.get_password(), Some(&b"it's a \\ secret"[..]));
        assert_eq!(c.get_dbname(), Some("app"));
    }

    #[test]
    fn redaction_hides_passwords_in_both_forms() {
        assert_eq!(
            redact("postgres://app:s3cr%40t@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://db/x?user=app&password=s3cret&sslmode=require"),
            "postgresql://db/x?user=app&password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        // An '@' in the query is not the end of the user info; the password still goes.
        for url in [
            "postgres://db:5432/x?application_name=a@b&password=s3cret",
            "postgres://db/x?password=s3cret&application_name=a@b",
            "postgres://db/x?pass%77ord=s3cret",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(
            redact("host=db user=app password='s3 cret' dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            redact("host=db password='unterminated s3cret"),
            "<unreadable connection string>"
        );
    }

    #[test]
    fn the_last_sslmode_wins_as_in_libpq() {
        assert_eq!(
            sp("host=h sslmode=disable sslmode=require").mode.as_deref(),
            Some("require")
        );
    }
}
