//! One place that turns a connection string into a `tokio_postgres::Config` and the TLS
//! connector to use with it, for the pool ([`PgRepository`](super::PgRepository)), the
//! migrations ([`migrate_url`](super::migrate_url)) and the realtime listener.
//!
//! tokio-postgres 0.7 understands `sslmode=disable|prefer|require` only and refuses any
//! other `ssl*` key, so `sslmode` and `sslrootcert` are taken out of the string here
//! (URL form `postgres://…?sslmode=verify-full&sslrootcert=/ca.pem` and key=value form
//! `host=… sslmode=verify-full sslrootcert=/ca.pem` alike), the rest is parsed by
//! tokio-postgres, and the mode it understands is set on the parsed config.
//!
//! | `sslmode` | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | — | — |
//! | `prefer` (default) | if the server offers TLS | only with `sslrootcert` | no |
//! | `require` | yes | only with `sslrootcert` | no |
//! | `verify-ca` | yes | chain to `sslrootcert` | no |
//! | `verify-full` | yes | chain to `sslrootcert` | yes |
//!
//! This follows libpq: `require` means "encrypted, but whoever answers may be an
//! impostor" (it defends against a passive eavesdropper only), except that libpq checks
//! the chain when a root certificate is present; so does this, when `sslrootcert` is
//! given. Unlike libpq, the default file `~/.postgresql/root.crt` is never read: the
//! server's CA must be named. `verify-ca` and `verify-full` without `sslrootcert`, or
//! with a file that cannot be read or holds no PEM certificate, are refused with
//! [`Error::InvalidInput`] naming `sslrootcert`. Client certificates (`sslcert`,
//! `sslkey`) are not supported and are refused by name. TLS applies to TCP hosts; over a
//! Unix socket use `disable` or `prefer`.
//!
//! Without the `tls` feature the connector is `NoTls`: `disable` and `prefer` (which
//! then stays plaintext) work, every other mode is refused naming `sslmode`.

mod connector;
mod conninfo;

pub(crate) use connector::{Connector, is_certificate_error};
pub(crate) use conninfo::RedactedUrl;

use std::str::FromStr;

use tokio_postgres::config::SslMode as PgSslMode;

use crate::error::Result;
use conninfo::{SslMode, bad_url, split};

/// Parses `url` and builds the connector its `sslmode`/`sslrootcert` ask for.
///
/// # Errors
/// [`Error::InvalidInput`] naming `url` (unparsable; the string is never echoed),
/// `sslmode` (unknown value, or TLS asked for without the `tls` feature) or
/// `sslrootcert` (needed by `verify-*` but absent, unreadable or without a PEM
/// certificate).
pub(crate) fn connect_config(url: &str) -> Result<(tokio_postgres::Config, Connector)> {
    let s = split(url)?;
    let mut config = tokio_postgres::Config::from_str(&s.rest).map_err(|_| bad_url())?;
    let mode = match &s.mode {
        Some(m) => SslMode::parse(m)?,
        None => SslMode::Prefer,
    };
    config.ssl_mode(match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    });
    let connector = connector::connector(mode, s.root.as_deref())?;
    Ok((config, connector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn refused(url: &str) -> Error {
        match connect_config(url) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn bad_input_is_refused_by_field_without_echoing_the_string() {
        let e = refused("host=h password=hunter2 sslmode=sometimes");
        assert_eq!(e.invalid_field(), Some("sslmode"));
        assert!(!e.to_string().contains("hunter2"));
        let e = refused("host=h password='hunter2");
        assert_eq!(e.invalid_field(), Some("url"));
        assert!(!e.to_string().contains("hunter2"));
        let e = refused("postgres://u:hunter2@h/db?port=notaport");
        assert_eq!(e.invalid_field(), Some("url"));
        assert!(!e.to_string().contains("hunter2"));
        let e = refused("host=h sslcert=/c.pem");
        assert_eq!(e.invalid_field(), Some("sslcert"));
    }

    #[test]
    fn the_mode_reaches_tokio_postgres() {
        let (c, _) = connect_config("host=h sslmode=disable").unwrap();
        assert_eq!(c.get_ssl_mode(), PgSslMode::Disable);
        let (c, _) = connect_config("postgres://h/db").unwrap();
        assert_eq!(c.get_ssl_mode(), PgSslMode::Prefer);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn verify_modes_need_a_readable_root_certificate() {
        for mode in ["verify-ca", "verify-full"] {
            let e = refused(&format!("host=h sslmode={mode}"));
            assert_eq!(e.invalid_field(), Some("sslrootcert"), "{mode}");
            let e = refused(&format!(
                "postgres://h/db?sslmode={mode}&sslrootcert=/nonexistent/kasama-ca.pem"
            ));
            assert_eq!(e.invalid_field(), Some("sslrootcert"));
            assert!(e.to_string().contains("no such file"), "{e}");
        }
        // A file that is not PEM.
        let e = refused(&format!(
            "host=h sslmode=verify-full sslrootcert={}",
            file!()
        ));
        assert_eq!(e.invalid_field(), Some("sslrootcert"));
        let (c, _) = connect_config("host=h sslmode=require").unwrap();
        assert_eq!(c.get_ssl_mode(), PgSslMode::Require);
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_tls_modes_are_refused() {
        let e = refused("host=h sslmode=require");
        assert_eq!(e.invalid_field(), Some("sslmode"));
    }
}
