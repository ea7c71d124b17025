//! Optional mutual TLS on the cluster port, for nodes that talk across networks they do
//! not own: TLS 1.3 only (rustls, ring provider), and both ends present a certificate
//! signed by the cluster CA, which the other end checks before anything else is read.
//!
//! Addresses change and are not what is trusted: the CA is. A dialer therefore checks
//! the listener's certificate for one fixed DNS name, [`SERVER_NAME`], whatever address
//! it dialled; every node's certificate names it (as a subject alternative name), and
//! serves as its client certificate too. The listener requires a client certificate and
//! checks its chain to the CA (no name is checked: any node of the cluster may call).
//!
//! The handshake is bounded by `handshake::TIMEOUT`. A failure is an `io::Error`: a
//! refused certificate, a peer that does not speak TLS, or a fatal alert from the peer
//! is `PermissionDenied`; a hang-up is whatever the socket said (EOF, reset).
//!
//! The configuration is reloadable: new connections take the newest, connections
//! already up keep theirs.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use broker_core::transport::tls::{certs, private_key, roots};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::handshake;

/// The DNS name every node's certificate must carry, and that dialers check.
pub const SERVER_NAME: &str = "raftmq-cluster";

/// The files of a node's cluster TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first: names [`SERVER_NAME`], signed by `ca`.
    pub cert: PathBuf,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM certificates of the cluster CA: what peers' certificates must chain to.
    pub ca: PathBuf,
}

/// Both ends of a node's cluster TLS, as last loaded.
#[derive(Clone)]
struct Configs {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

/// A node's cluster TLS: its certificate, and the CA it trusts.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Configs>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads the files and checks that this node's certificate would pass its peers'
    /// checks; the error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let configs = build(&files, true)?;
        Ok(Tls {
            files,
            current: RwLock::new(configs),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Loads the files again; on error the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let configs = build(&self.files, true)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = configs;
        Ok(())
    }

    fn current(&self) -> Configs {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The listening side: TLS over `stream`, the peer's certificate checked.
    pub(crate) async fn accept<S>(&self, stream: S) -> io::Result<server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = self.current().acceptor;
        bounded(acceptor.accept(stream)).await
    }

    /// The dialing side: TLS over `stream`, the listener's certificate checked.
    pub(crate) async fn connect<S>(&self, stream: S) -> io::Result<client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let connector = self.current().connector;
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        bounded(connector.connect(name, stream)).await
    }
}

/// A TLS error read or sent (tokio-rustls gives them as `InvalidData`): a refusal, as
/// the secret handshake's are.
pub(crate) fn refusal(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::InvalidData {
        io::Error::new(io::ErrorKind::PermissionDenied, format!("TLS: {e}"))
    } else {
        e
    }
}

async fn bounded<T>(handshake: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(handshake::TIMEOUT, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "cluster TLS handshake timed out"))?
        .map_err(refusal)
}

/// The configurations `files` make; `check`: refuse a certificate of our own that peers
/// would refuse (always, but in tests that need such a node).
fn build(files: &TlsFiles, check: bool) -> Result<Configs, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&files.cert)?;
    let key = private_key(&files.key)?;
    let roots: Arc<RootCertStore> = Arc::new(roots(&files.ca)?);
    let bad_ca = |e: &dyn fmt::Display| format!("{}: {e}", files.ca.display());
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| bad_ca(&e))?;
    let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| bad_ca(&e))?;
    if check {
        check_own(files, &chain, &*clients, &*servers)?;
    }

    let tls13 = [&rustls::version::TLS13];
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&tls13)
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&tls13)
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    Ok(Configs {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    })
}

/// This node's certificate passes what its peers will check, as a listener and as a
/// dialer: a misconfigured node stops at start-up instead of failing every connection.
fn check_own(
    files: &TlsFiles,
    chain: &[CertificateDer<'static>],
    clients: &dyn ClientCertVerifier,
    servers: &dyn ServerCertVerifier,
) -> Result<(), String> {
    let (leaf, intermediates) = chain.split_first().expect("certs() gives one or more");
    let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
    let now = UnixTime::now();
    let refused = |e: rustls::Error| {
        format!(
            "{}: not a valid cluster certificate under {} ({e}): it must be signed by the \
             cluster CA and name DNS:{SERVER_NAME}",
            files.cert.display(),
            files.ca.display()
        )
    };
    servers
        .verify_server_cert(leaf, intermediates, &name, &[], now)
        .map_err(refused)?;
    clients
        .verify_client_cert(leaf, intermediates, now)
        .map_err(refused)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Secret;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CA in a temp dir, issuing node certificates as PEM files.
    struct Ca {
        dir: tempfile::TempDir,
        issuer: Issuer<'static, KeyPair>,
        name: &'static str,
    }

    impl Ca {
        fn new(name: &'static str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            Ca {
                dir,
                issuer: Issuer::new(params, key),
                name,
            }
        }

        fn ca_file(&self) -> PathBuf {
            self.dir.path().join(format!("{}.pem", self.name))
        }

        /// Files of a node whose certificate names `san`, trusting `trusted`'s CA.
        fn node(&self, file: &str, san: &str, trusted: &Ca) -> TlsFiles {
            let mut params = CertificateParams::new(vec![san.to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, file);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let files = TlsFiles {
                cert: self.dir.path().join(format!("{file}.pem")),
                key: self.dir.path().join(format!("{file}.key")),
                ca: trusted.ca_file(),
            };
            std::fs::write(&files.cert, cert.pem()).unwrap();
            std::fs::write(&files.key, key.serialize_pem()).unwrap();
            files
        }
    }

    /// A node's own certificate is checked at load, and its key must be readable.
    #[test]
    fn load_checks_the_nodes_own_certificate() {
        let ca = Ca::new("ca");
        let other = Ca::new("other");
        Tls::load(ca.node("good", SERVER_NAME, &ca)).unwrap();
        let err = Tls::load(ca.node("wrong-name", "node1.example", &ca)).unwrap_err();
        assert!(err.contains("must be signed by the cluster CA"), "{err}");
        assert!(err.contains("wrong-name.pem"), "{err}");
        let err = Tls::load(other.node("foreign", SERVER_NAME, &ca)).unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        let mut files = ca.node("nokey", SERVER_NAME, &ca);
        files.key = files.cert.clone();
        let err = Tls::load(files).unwrap_err();
        assert!(err.contains("no usable private key"), "{err}");
        let mut files = ca.node("noca", SERVER_NAME, &ca);
        files.ca = ca.dir.path().join("missing.pem");
        let err = Tls::load(files).unwrap_err();
        assert!(err.contains("missing.pem: cannot read"), "{err}");
    }

    /// A dialer and a listener over an in-memory pipe: TLS, then the secret handshake,
    /// then a frame each way; or the errors of each side.
    async fn pair(dialer: &Tls, listener: &Tls) -> (io::Result<Vec<u8>>, io::Result<Vec<u8>>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let secret = Secret::new("0123456789abcdef").unwrap();
        let dial = async {
            let mut s = dialer.connect(a).await?;
            // As `network::connect`: a refusal of ours arrives as an alert here.
            handshake::dial(&mut s, &secret).await.map_err(refusal)?;
            s.write_all(b"ping").await?;
            s.flush().await?;
            let mut buf = vec![0; 4];
            s.read_exact(&mut buf).await?;
            Ok(buf)
        };
        let accept = async {
            let mut s = listener.accept(b).await?;
            handshake::accept(&mut s, &secret).await?;
            let mut buf = vec![0; 4];
            s.read_exact(&mut buf).await?;
            s.write_all(b"pong").await?;
            s.flush().await?;
            Ok(buf)
        };
        tokio::join!(dial, accept)
    }

    #[tokio::test]
    async fn nodes_of_one_ca_talk() {
        let ca = Ca::new("ca");
        let one = Tls::load(ca.node("one", SERVER_NAME, &ca)).unwrap();
        let two = Tls::load(ca.node("two", SERVER_NAME, &ca)).unwrap();
        let (d, l) = pair(&one, &two).await;
        assert_eq!(d.unwrap(), b"pong");
        assert_eq!(l.unwrap(), b"ping");
    }

    /// A node of another CA that trusts ours (the CA certificate is public): the
    /// listener refuses its certificate, and the dialer reads the alert; as a listener,
    /// our dialer refuses it.
    #[tokio::test]
    async fn a_certificate_of_another_ca_is_refused() {
        let ca = Ca::new("ca");
        let other = Ca::new("other");
        let member = Tls::load(ca.node("member", SERVER_NAME, &ca)).unwrap();
        let files = other.node("intruder", SERVER_NAME, &ca);
        assert!(Tls::load(files.clone()).is_err(), "refused at start-up");
        let intruder = Tls {
            current: RwLock::new(build(&files, false).unwrap()),
            files,
        };
        let (d, l) = pair(&intruder, &member).await;
        let l = l.unwrap_err();
        assert_eq!(l.kind(), io::ErrorKind::PermissionDenied, "{l}");
        assert!(l.to_string().contains("UnknownIssuer"), "{l}");
        let d = d.unwrap_err();
        assert_eq!(d.kind(), io::ErrorKind::PermissionDenied, "{d}");

        let (d, l) = pair(&member, &intruder).await;
        let d = d.unwrap_err();
        assert_eq!(d.kind(), io::ErrorKind::PermissionDenied, "{d}");
        assert!(d.to_string().contains("UnknownIssuer"), "{d}");
        assert!(l.is_err());
    }

    /// A TLS client that trusts the CA but sends no certificate: refused.
    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused() {
        let ca = Ca::new("ca");
        let member = Tls::load(ca.node("member", SERVER_NAME, &ca)).unwrap();
        let client =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots(&ca.ca_file()).unwrap())
                .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let dial = async {
            let mut s = TlsConnector::from(Arc::new(client))
                .connect(name, a)
                .await?;
            // TLS 1.3: the client is done first; the refusal comes as an alert.
            s.write_all(&[0, 0, 0, 2, 5, 3]).await?;
            s.flush().await?;
            let mut buf = [0; 1];
            s.read(&mut buf).await
        };
        // Bounded: a listener that let it in would hold the stream, answering nothing.
        let dial = async {
            tokio::time::timeout(handshake::TIMEOUT, dial)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
        };
        let (d, l) = tokio::join!(dial, member.accept(b));
        let l = l.map(|_| ()).unwrap_err();
        assert_eq!(l.kind(), io::ErrorKind::PermissionDenied, "{l}");
        assert!(d.is_err() || matches!(d, Ok(0)), "{d:?}");
    }

    /// Plain bytes (a frame, or the secret handshake's HELLO) are not TLS: refused at
    /// once, not waited on.
    #[tokio::test]
    async fn plain_bytes_are_refused() {
        let ca = Ca::new("ca");
        let member = Tls::load(ca.node("member", SERVER_NAME, &ca)).unwrap();
        for bytes in [&[0u8, 0, 0, 2, 5, 3][..], b"RMQC\x01 and some more bytes"] {
            let (mut a, b) = tokio::io::duplex(1024);
            a.write_all(bytes).await.unwrap();
            let started = std::time::Instant::now();
            let err = member.accept(b).await.map(|_| ()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
            assert!(started.elapsed() < handshake::TIMEOUT);
        }
    }

    /// A peer that says nothing is dropped when the handshake deadline passes.
    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let ca = Ca::new("ca");
        let member = Tls::load(ca.node("member", SERVER_NAME, &ca)).unwrap();
        let (_a, b) = tokio::io::duplex(1024);
        let err = member.accept(b).await.map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// A reload takes new files; a bad one leaves the previous configuration.
    #[tokio::test]
    async fn reload_takes_new_files_or_keeps_the_old() {
        let ca = Ca::new("ca");
        let other = Ca::new("other");
        let mut files = ca.node("member", SERVER_NAME, &ca);
        files.ca = ca.dir.path().join("member-ca.pem");
        std::fs::copy(ca.ca_file(), &files.ca).unwrap();
        let member = Tls::load(files.clone()).unwrap();
        let peer = Tls::load(ca.node("peer", SERVER_NAME, &ca)).unwrap();

        // Another CA's file: our certificate fails the check, nothing changes.
        std::fs::copy(other.ca_file(), &files.ca).unwrap();
        let err = member.reload().unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        let (d, l) = pair(&peer, &member).await;
        assert!(d.is_ok() && l.is_ok(), "the previous configuration stays");

        // A certificate and CA of another cluster: taken, so the old peer is refused.
        let moved = other.node("moved", SERVER_NAME, &other);
        std::fs::copy(&moved.cert, &files.cert).unwrap();
        std::fs::copy(&moved.key, &files.key).unwrap();
        member.reload().unwrap();
        let (d, _) = pair(&peer, &member).await;
        assert_eq!(d.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }
}
