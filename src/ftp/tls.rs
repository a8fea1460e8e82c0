//! TLS for FTPS: the rustls client configuration (system roots, an extra CA,
//! or no verification at all, loudly). One configuration is shared by every
//! connection, so data connections resume the control connection's TLS session,
//! as vsftpd's default `require_ssl_reuse` demands.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// When to use TLS on the control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plain FTP.
    #[default]
    Off,
    /// AUTH TLS if the server accepts it, plain FTP if it refuses.
    Try,
    /// AUTH TLS, or fail (`-o tls`, `ftpes://`).
    Explicit,
}

/// How to check the server's certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub mode: TlsMode,
    /// An extra CA (PEM) trusted besides the system roots.
    pub cacert: Option<PathBuf>,
    /// Accept any certificate (`-o no_verify`).
    pub no_verify: bool,
}

/// Builds the shared client configuration; `None` when TLS is off.
pub fn client_config(opts: &TlsOptions) -> Result<Option<Arc<ClientConfig>>, String> {
    if opts.mode == TlsMode::Off {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if opts.no_verify {
        log::warn!("TLS certificates are NOT verified (-o no_verify): anyone on the path can impersonate the server");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(opts)?)
            .with_no_client_auth()
    };
    Ok(Some(Arc::new(config)))
}

fn roots(opts: &TlsOptions) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = store.add(cert);
    }
    if let Some(path) = &opts.cacert {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate in the CA file {}", path.display()));
        }
        for c in certs {
            store
                .add(c)
                .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
        }
    }
    if store.is_empty() {
        return Err(
            "no trusted certificates: install ca-certificates or give -o cacert=FILE".into(),
        );
    }
    Ok(store)
}

/// Accepts every certificate: for `-o no_verify` only.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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
