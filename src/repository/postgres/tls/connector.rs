//! The TLS connector for a `sslmode` and `sslrootcert` (rustls with the `ring`
//! provider; `NoTls` without the `tls` feature), and telling a refused certificate
//! from other connection failures.

use super::conninfo::SslMode;
use crate::error::{Error, Result};

/// The connector every kasama PostgreSQL connection is opened with.
#[cfg(feature = "tls")]
pub(crate) type Connector = tokio_postgres_rustls::MakeRustlsConnect;
/// The connector every kasama PostgreSQL connection is opened with.
#[cfg(not(feature = "tls"))]
pub(crate) type Connector = tokio_postgres::NoTls;

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
pub(super) fn connector(mode: SslMode, _root: Option<&str>) -> Result<Connector> {
    match mode {
        SslMode::Disable | SslMode::Prefer => Ok(tokio_postgres::NoTls),
        _ => Err(Error::invalid(
            "sslmode",
            "TLS needs kasama's `tls` feature (on by default)",
        )),
    }
}

#[cfg(feature = "tls")]
pub(super) fn connector(mode: SslMode, root: Option<&str>) -> Result<Connector> {
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
