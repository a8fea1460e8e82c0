//! TLS for FTPS: the rustls client configuration (system roots, an extra CA,
//! or no verification at all, loudly), TLS 1.2 first (see [`TlsConfig`]). Each
//! control connection copies it with a session cache of its own (see
//! `conn::TimedTls`), so its data connections resume its TLS session, as
//! vsftpd's default `require_ssl_reuse` demands.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// TLS from the first byte, usually on port 990 (`ftps://`).
    Implicit,
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

/// The mount's TLS client configurations. TLS 1.2 is offered first: every FTPS
/// data connection must resume the control connection's session, and with
/// TLS 1.3 each resumption uses up a single-use ticket (vsftpd, for one, honours
/// only the tickets of the login handshake, so the third upload would fail with
/// "522 session reuse required"). TLS 1.2 sessions resume any number of times.
/// A server that allows nothing older than TLS 1.3 refuses the first handshake;
/// from then on every connection offers TLS 1.3 too.
#[derive(Debug)]
pub struct TlsConfig {
    tls12: Arc<ClientConfig>,
    tls13: Arc<ClientConfig>,
    tls13_needed: AtomicBool,
}

impl TlsConfig {
    /// The configuration for the next connection.
    pub fn current(&self) -> &Arc<ClientConfig> {
        if self.tls13_needed.load(Ordering::Relaxed) {
            &self.tls13
        } else {
            &self.tls12
        }
    }

    /// Looks at a failed handshake: true (once) when the server wants TLS 1.3,
    /// and later connections will offer it.
    pub fn learn_from(&self, error: &str) -> bool {
        let wants_newer = error.contains("ProtocolVersion") || error.contains("protocol version");
        if wants_newer && !self.tls13_needed.swap(true, Ordering::Relaxed) {
            log::info!("the server refused TLS 1.2; using TLS 1.3");
            return true;
        }
        false
    }
}

/// Builds the shared client configurations; `None` when TLS is off.
pub fn client_config(opts: &TlsOptions) -> Result<Option<Arc<TlsConfig>>, String> {
    if opts.mode == TlsMode::Off {
        return Ok(None);
    }
    if opts.no_verify {
        log::warn!("TLS certificates are NOT verified (-o no_verify): anyone on the path can impersonate the server");
    }
    let roots = if opts.no_verify {
        None
    } else {
        Some(roots(opts)?)
    };
    let build = |versions: &[&'static rustls::SupportedProtocolVersion]| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS setup: {e}"))?;
        let config = match &roots {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth(),
            Some(roots) => builder
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        };
        Ok::<_, String>(Arc::new(config))
    };
    Ok(Some(Arc::new(TlsConfig {
        tls12: build(&[&rustls::version::TLS12])?,
        tls13: build(rustls::DEFAULT_VERSIONS)?,
        tls13_needed: AtomicBool::new(false),
    })))
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
