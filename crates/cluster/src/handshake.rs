//! Mutual authentication of a cluster connection, before any frame is read: both ends
//! prove they know the cluster secret, which never crosses the wire.
//!
//! ```text
//! dialer   -> listener  HELLO  = MAGIC, VERSION, client nonce (32 bytes)
//! listener -> dialer    PROOF  = MAGIC, VERSION, server nonce (32), listener MAC (32)
//! dialer   -> listener  FINISH = dialer MAC (32)
//!
//! MAC = HMAC-SHA256(secret, role tag || client nonce || server nonce)
//! ```
//!
//! Every message has a fixed size, so nothing read before the proof is a length. The
//! two roles use different tags, so a listener's proof reflected back is no dialer's
//! proof; each side's fresh nonce makes a recorded transcript useless on a new
//! connection. The listener proves first and the dialer answers only a valid proof, so
//! an impostor listener learns nothing a dialer would sign. The whole exchange is
//! bounded by [`TIMEOUT`]. This authenticates peers; it does not encrypt the traffic.

use std::fmt;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bound on the whole exchange: a stalled socket holds nothing for longer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest secret accepted (bytes).
pub const MIN_SECRET: usize = 16;

const MAGIC: &[u8; 4] = b"RMQC";
const VERSION: u8 = 1;
const NONCE: usize = 32;
const MAC: usize = 32;
const HELLO: usize = MAGIC.len() + 1 + NONCE;
const PROOF: usize = MAGIC.len() + 1 + NONCE + MAC;
const DIALER_TAG: &[u8] = b"raftmq cluster v1 dialer";
const LISTENER_TAG: &[u8] = b"raftmq cluster v1 listener";

/// The cluster secret. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret of at least [`MIN_SECRET`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, String> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET {
            return Err(format!(
                "too short ({} bytes; at least {MIN_SECRET}, e.g. `openssl rand -hex 32`)",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }

    /// The key of a node without a secret: known to all, so it proves nothing; such a
    /// node only talks to loopback peers (`node::serve`).
    pub(crate) fn none() -> Secret {
        Secret(Vec::new())
    }

    /// The secret's text, to send where it is a bearer token (never the cluster secret).
    pub fn expose(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// Whether `other` is this secret, compared in constant time (an HMAC under a
    /// fresh random key of each, checked with `verify_slice`), e.g. an admin token.
    pub fn matches(&self, other: &[u8]) -> bool {
        let Ok(key) = nonce() else {
            return false;
        };
        let digest = |bytes: &[u8]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key size");
            mac.update(bytes);
            mac
        };
        let expected = digest(&self.0).finalize().into_bytes();
        digest(other).verify_slice(&expected).is_ok()
    }

    /// Whether this is [`Secret::none`].
    pub(crate) fn is_none(&self) -> bool {
        self.0.is_empty()
    }

    fn mac(&self, tag: &[u8], client: &[u8; NONCE], server: &[u8; NONCE]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key size");
        mac.update(tag);
        mac.update(client);
        mac.update(server);
        mac
    }

    fn sign(&self, tag: &[u8], client: &[u8; NONCE], server: &[u8; NONCE]) -> [u8; MAC] {
        self.mac(tag, client, server).finalize().into_bytes().into()
    }

    /// Constant-time check of a peer's MAC.
    fn verify(&self, tag: &[u8], client: &[u8; NONCE], server: &[u8; NONCE], mac: &[u8]) -> bool {
        self.mac(tag, client, server).verify_slice(mac).is_ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn nonce() -> io::Result<[u8; NONCE]> {
    let mut n = [0; NONCE];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(n)
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
}

fn check_prefix(msg: &[u8]) -> io::Result<()> {
    if &msg[..MAGIC.len()] != MAGIC {
        return Err(refused("not a raftmq cluster peer (bad magic)"));
    }
    if msg[MAGIC.len()] != VERSION {
        return Err(refused("unsupported cluster handshake version"));
    }
    Ok(())
}

async fn bounded<T>(exchange: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "cluster handshake timed out"))?
}

/// The dialing side: succeeds once the listener has proved the secret and we have.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, secret: &Secret) -> io::Result<()> {
    bounded(async {
        let client = nonce()?;
        let mut hello = [0; HELLO];
        hello[..4].copy_from_slice(MAGIC);
        hello[4] = VERSION;
        hello[5..].copy_from_slice(&client);
        s.write_all(&hello).await?;

        let mut proof = [0; PROOF];
        s.read_exact(&mut proof).await?;
        check_prefix(&proof)?;
        let server: [u8; NONCE] = proof[5..5 + NONCE].try_into().expect("fixed layout");
        if !secret.verify(LISTENER_TAG, &client, &server, &proof[5 + NONCE..]) {
            return Err(refused(
                "peer did not prove the cluster secret (is it the same on every node?)",
            ));
        }
        s.write_all(&secret.sign(DIALER_TAG, &client, &server))
            .await?;
        s.flush().await
    })
    .await
}

/// The listening side: succeeds once the dialer has proved the secret.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &Secret,
) -> io::Result<()> {
    bounded(async {
        let mut hello = [0; HELLO];
        s.read_exact(&mut hello).await?;
        check_prefix(&hello)?;
        let client: [u8; NONCE] = hello[5..].try_into().expect("fixed layout");
        let server = nonce()?;
        let mut proof = [0; PROOF];
        proof[..4].copy_from_slice(MAGIC);
        proof[4] = VERSION;
        proof[5..5 + NONCE].copy_from_slice(&server);
        proof[5 + NONCE..].copy_from_slice(&secret.sign(LISTENER_TAG, &client, &server));
        s.write_all(&proof).await?;
        s.flush().await?;

        let mut finish = [0; MAC];
        s.read_exact(&mut finish).await?;
        if !secret.verify(DIALER_TAG, &client, &server, &finish) {
            return Err(refused("peer did not prove the cluster secret"));
        }
        Ok(())
    })
    .await
}

/// One warning line per [`Quiet::EVERY`] at most, saying how many were held back: a
/// scan or a misconfigured peer retrying every heartbeat does not flood the log.
pub struct Quiet {
    last: Mutex<Option<(Instant, u64)>>,
}

impl Quiet {
    const EVERY: Duration = Duration::from_secs(10);

    pub const fn new() -> Quiet {
        Quiet {
            last: Mutex::new(None),
        }
    }

    pub fn warn(&self, message: fmt::Arguments<'_>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *last {
            Some((at, held)) if at.elapsed() < Self::EVERY => *held += 1,
            _ => {
                let held = last.map_or(0, |(_, held)| held);
                if held > 0 {
                    tracing::warn!("{message} ({held} more refusals not logged)");
                } else {
                    tracing::warn!("{message}");
                }
                *last = Some((Instant::now(), 0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes()).unwrap()
    }

    async fn run(dialer: &Secret, listener: &Secret) -> (io::Result<()>, io::Result<()>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        // Each side closes its end when done, as a refusing peer does.
        tokio::join!(async move { dial(&mut a, dialer).await }, async move {
            accept(&mut b, listener).await
        },)
    }

    #[tokio::test]
    async fn same_secret_passes_both_ways() {
        let s = secret("0123456789abcdef");
        let (d, l) = run(&s, &s).await;
        d.unwrap();
        l.unwrap();
    }

    #[tokio::test]
    async fn a_different_secret_is_refused_by_both() {
        let (d, l) = run(&secret("0123456789abcdef"), &secret("0123456789abcdeX")).await;
        assert_eq!(d.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert!(l.is_err(), "the listener gets no proof");
    }

    /// A listener's proof sent back to it as a dialer's: the tags differ.
    #[tokio::test]
    async fn a_reflected_proof_is_refused() {
        let s = secret("0123456789abcdef");
        let (mut a, mut b) = tokio::io::duplex(1024);
        let listener = tokio::spawn(async move { accept(&mut b, &s).await });
        let mut hello = [0; HELLO];
        hello[..4].copy_from_slice(MAGIC);
        hello[4] = VERSION;
        a.write_all(&hello).await.unwrap();
        let mut proof = [0; PROOF];
        a.read_exact(&mut proof).await.unwrap();
        a.write_all(&proof[5 + NONCE..]).await.unwrap();
        let err = listener.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[tokio::test]
    async fn a_frame_instead_of_a_hello_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let mut frame = vec![0, 0, 0, 2, 5, 3];
        frame.resize(HELLO, 0);
        a.write_all(&frame).await.unwrap();
        let err = accept(&mut b, &secret("0123456789abcdef"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn short_secrets_are_refused_and_never_shown() {
        assert!(Secret::new("short")
            .unwrap_err()
            .contains("too short (5 bytes"));
        assert_eq!(format!("{:?}", secret("0123456789abcdef")), "Secret(..)");
    }
}
