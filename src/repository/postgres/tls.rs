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

use std::str::FromStr;

use tokio_postgres::config::SslMode as PgSslMode;

use crate::error::{Error, Result};

/// The connector every kasama PostgreSQL connection is opened with.
#[cfg(feature = "tls")]
pub(crate) type Connector = tokio_postgres_rustls::MakeRustlsConnect;
/// The connector every kasama PostgreSQL connection is opened with.
#[cfg(not(feature = "tls"))]
pub(crate) type Connector = tokio_postgres::NoTls;

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self> {
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
struct Split {
    rest: String,
    mode: Option<String>,
    root: Option<String>,
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

fn bad_url() -> Error {
    Error::invalid("url", "not a valid PostgreSQL connection string")
}

/// Takes the TLS keys out of `url`, in URL or key=value form. Never echoes the string
/// (it may hold a password) in an error.
fn split(url: &str) -> Result<Split> {
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
    let connector = connector(mode, s.root.as_deref())?;
    Ok((config, connector))
}

/// Whether a connection failed because the server's certificate was refused.
pub(crate) fn is_certificate_error(e: &tokio_postgres::Error) -> bool {
    #[cfg(feature = "tls")]
    {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            let rustls_err = s.downcast_ref::<rustls::Error>().or_else(|| {
                s.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(rustls::Error::InvalidCertificate(_)) = rustls_err {
                return true;
            }
            source = s.source();
        }
    }
    #[cfg(not(feature = "tls"))]
    let _ = e;
    false
}

#[cfg(not(feature = "tls"))]
fn connector(mode: SslMode, _root: Option<&str>) -> Result<Connector> {
    match mode {
        SslMode::Disable | SslMode::Prefer => Ok(tokio_postgres::NoTls),
        _ => Err(Error::invalid(
            "sslmode",
            "TLS needs kasama's `tls` feature (on by default)",
        )),
    }
}

#[cfg(feature = "tls")]
fn connector(mode: SslMode, root: Option<&str>) -> Result<Connector> {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match (mode, root) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(Error::invalid(
                "sslrootcert",
                "sslmode=verify-ca and verify-full need sslrootcert=<the server's CA certificate, PEM>",
            ));
        }
        // Not needed when TLS is off; ignored, as libpq does.
        (SslMode::Disable, _) | (_, None) => None,
        (_, Some(path)) => Some(Arc::new(root_store(path)?)),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => Arc::new(verify::Unverified(provider.clone())),
        Some(roots) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|_| Error::invalid("sslrootcert", "no usable CA certificate"))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(verify::ChainOnly(webpki))
            }
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| Error::invalid("sslmode", "no TLS protocol version available"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(feature = "tls")]
fn root_store(path: &str) -> Result<rustls::RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let bytes = std::fs::read(path).map_err(|e| {
        Error::invalid(
            "sslrootcert",
            format!("cannot read {path}: {}", io_reason(&e)),
        )
    })?;
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert =
            cert.map_err(|_| Error::invalid("sslrootcert", format!("{path}: not a PEM file")))?;
        store.add(cert).map_err(|_| {
            Error::invalid(
                "sslrootcert",
                format!("{path}: a certificate that cannot be a trust anchor"),
            )
        })?;
    }
    if store.is_empty() {
        return Err(Error::invalid(
            "sslrootcert",
            format!("{path}: no PEM certificate in the file"),
        ));
    }
    Ok(store)
}

#[cfg(feature = "tls")]
fn io_reason(e: &std::io::Error) -> std::borrow::Cow<'static, str> {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string().into(),
    }
}

#[cfg(feature = "tls")]
mod verify {
    //! The two certificate verifiers rustls does not ship: none (libpq's `require`)
    //! and chain-only (libpq's `verify-ca`). Both still check the handshake
    //! signatures, so the session key is bound to the certificate presented.

    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

    /// Accepts any certificate: encryption without authentication.
    #[derive(Debug)]
    pub(super) struct Unverified(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// The chain must lead to a trusted root; the name in it is not compared with the
    /// host. rustls checks the chain before the name, so a name mismatch is the only
    /// error forgiven here.
    #[derive(Debug)]
    pub(super) struct ChainOnly(pub(super) Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> Error {
        match connect_config(url) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        }
    }

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
