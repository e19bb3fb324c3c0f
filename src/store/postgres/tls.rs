//! TLS to PostgreSQL with libpq's parameters, so that a library reached over a network is
//! encrypted and, when asked, the server checked: `sslmode` (`disable`, `allow`, `prefer` — the
//! default —, `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file of the
//! certificate authorities to trust, or `system` for the Mozilla roots built in). tokio-postgres
//! knows neither the two verifying modes nor `sslrootcert`, so they are taken out of the URL
//! here and carried out by rustls (with *ring*, built with the C compiler only).
//!
//! As libpq does: `prefer` and `allow` encrypt when the server can and check nothing; `require`
//! encrypts and checks the chain when a root file is given (or `~/.postgresql/root.crt`
//! exists); `verify-ca` checks the chain; `verify-full` the chain and the host name.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::config::SslMode as WireMode;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// What tokio-postgres is told: whether to try TLS and whether it must succeed.
    pub fn on_the_wire(self) -> WireMode {
        match self {
            SslMode::Disable => WireMode::Disable,
            SslMode::Allow | SslMode::Prefer => WireMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
        }
    }
}

/// A URL's TLS settings, and the URL without the parameters tokio-postgres does not take.
#[derive(Debug)]
pub struct TlsUrl {
    pub url: String,
    pub mode: SslMode,
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query; the rest is kept as
/// written. An unknown mode is an error that lists the known ones.
pub fn split_tls_params(url: &str) -> Result<TlsUrl, String> {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, q),
        None => return Ok(TlsUrl { url: url.to_string(), mode: SslMode::Prefer, root_cert: None }),
    };
    let (mut mode, mut root_cert, mut kept) = (SslMode::Prefer, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                let value = percent_decode(value)?;
                mode = SslMode::parse(&value).ok_or_else(|| {
                    format!(
                        "sslmode={value} is not a mode: use disable, allow, prefer, require, verify-ca or verify-full"
                    )
                })?;
            }
            "sslrootcert" => root_cert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { head.to_string() } else { format!("{head}?{}", kept.join("&")) };
    Ok(TlsUrl { url, mode, root_cert })
}

fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| format!("{value:?} has a broken %-escape"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} is not UTF-8 once decoded"))
}

/// The connector for these settings; `None` for `sslmode=disable`.
pub fn connector(mode: SslMode, root_cert: Option<&str>) -> Result<Option<MakeRustls>, String> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // libpq's default root file, used when it exists and no other is named.
    let default_root = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
        .filter(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned());
    let root_cert = root_cert.map(str::to_string).or(if mode >= SslMode::Require { default_root } else { None });
    let roots = match root_cert.as_deref() {
        None if mode >= SslMode::VerifyCa => {
            return Err(format!(
                "sslmode={} needs the certificate authority that signed the server's certificate: add \
                 sslrootcert=FILE (PEM) to the URL, or sslrootcert=system for the public authorities",
                if mode == SslMode::VerifyCa { "verify-ca" } else { "verify-full" }
            ));
        }
        None => None,
        Some("system") if mode < SslMode::VerifyFull => {
            return Err("sslrootcert=system checks host names: use it with sslmode=verify-full".to_string());
        }
        Some("system") => Some(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }),
        Some(file) => Some(read_roots(file)?),
    };
    let chain = match roots {
        None => None,
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?,
        ),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match chain {
        Some(webpki) if mode == SslMode::VerifyFull => webpki,
        chain => Arc::new(Lenient { chain, provider: provider.clone() }),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(MakeRustls { config: Arc::new(config) }))
}

fn read_roots(file: &str) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("sslrootcert={file}: cannot read PEM certificates: {e}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("sslrootcert={file}: no certificate in it"));
    }
    Ok(roots)
}

/// What the modes short of `verify-full` check, as libpq does: with roots (`verify-ca`, or
/// `require` with a root file), that the chain leads to one of them, whatever name the
/// certificate holds (the chain is checked before the name, so a name error means the chain
/// passed); without (`prefer`, `allow`, `require`), nothing. The handshake's signatures are
/// verified either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres' TLS hook, with rustls.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MakeTlsConnect<S> for MakeRustls {
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("host {host:?}: {e}")))?;
        Ok(RustlsConnect { config: self.config.clone(), name })
    }
}

pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for RustlsConnect {
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Handshake<S> {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config).connect(self.name, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// An encrypted connection to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM's channel binding (tls-server-end-point) is not offered; authentication is
        // plain SCRAM inside the encrypted channel.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url_and_the_rest_kept() {
        let t =
            split_tls_params("postgres://u:p@h:5432/db?sslmode=verify-full&connect_timeout=5&sslrootcert=%2Fa%20b.pem")
                .unwrap();
        assert_eq!(
            (t.url.as_str(), t.mode, t.root_cert.as_deref()),
            ("postgres://u:p@h:5432/db?connect_timeout=5", SslMode::VerifyFull, Some("/a b.pem"))
        );
        let t = split_tls_params("postgres://h/db").unwrap();
        assert_eq!((t.url.as_str(), t.mode, t.root_cert), ("postgres://h/db", SslMode::Prefer, None));
        let t = split_tls_params("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!((t.url.as_str(), t.mode), ("postgres://h/db", SslMode::Disable));
        let e = split_tls_params("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(e.contains("verify-full"), "{e}");
        assert!(split_tls_params("postgres://h/db?sslrootcert=%zz").is_err());
    }

    #[test]
    fn verifying_modes_need_a_root_and_a_root_must_hold_certificates() {
        assert!(connector(SslMode::Disable, None).unwrap().is_none());
        assert!(connector(SslMode::Prefer, None).unwrap().is_some());
        if std::env::var_os("HOME").is_none_or(|h| !PathBuf::from(h).join(".postgresql/root.crt").exists()) {
            let e = connector(SslMode::VerifyFull, None).err().unwrap();
            assert!(e.contains("sslrootcert=FILE"), "{e}");
        }
        assert!(connector(SslMode::VerifyFull, Some("system")).unwrap().is_some());
        assert!(connector(SslMode::Require, Some("system")).err().unwrap().contains("verify-full"));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = connector(SslMode::VerifyCa, Some(empty.to_str().unwrap())).err().unwrap();
        assert!(e.contains("no certificate"), "{e}");
        let e = connector(SslMode::VerifyCa, Some("/no/such/ca.pem")).err().unwrap();
        assert!(e.contains("/no/such/ca.pem"), "{e}");
    }
}
