//! Client authentication at CONNECT: a password from the password file (argon2), or a
//! JWT checked with the configured key, plus the throttling of failed logins.
//!
//! - `password`: the password file, hashing and verification.
//! - `jwt`: tokens as passwords.
//! - `throttle`: growing delays for addresses that keep failing.
//!
//! The connection calls [`Auth::check`] once per CONNECT; SIGHUP calls
//! [`Auth::reload`]. With neither a password file nor a JWT key, authentication is off
//! and every client is accepted under the username it sent, as before.
//!
//! Which credential is tried: a client whose username is in the password file is
//! checked against its hash only. Otherwise its password is read as a JWT, when a key
//! is configured; the token's username claim becomes its username, and a username sent
//! in CONNECT must equal it (3.1.1 needs one whenever there is a password).

pub mod jwt;
pub mod password;
pub mod throttle;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::{Config, JwtAlgorithm};
use crate::packet::reason;
pub use jwt::JwtVerifier;
pub use password::{hash_password, PasswordTable};
use throttle::Throttle;

/// Who a client is once it has authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The name the access rules see; `None` for an anonymous client.
    pub username: Option<String>,
}

/// Why a client is refused: the 5.0 CONNACK reason code (`codec` maps it to the 3.1.1
/// return code: 0x86 → 0x04, 0x87 → 0x05) and words for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u8,
    pub why: &'static str,
}

impl Refusal {
    fn bad_credentials(why: &'static str) -> Refusal {
        Refusal {
            code: reason::BAD_USERNAME_OR_PASSWORD,
            why,
        }
    }
}

/// Where the credentials come from, kept to read them again on reload.
#[derive(Debug, Clone)]
struct Sources {
    password_file: Option<PathBuf>,
    jwt_key_file: Option<PathBuf>,
    jwt_algorithm: JwtAlgorithm,
    jwt_username_claim: String,
}

/// What the sources held when last read.
#[derive(Debug, Default)]
struct Credentials {
    passwords: Option<PasswordTable>,
    jwt: Option<JwtVerifier>,
}

impl Sources {
    fn read(&self) -> Result<Credentials, String> {
        let passwords = match &self.password_file {
            Some(path) => Some(PasswordTable::read(path)?),
            None => None,
        };
        let jwt = match &self.jwt_key_file {
            Some(path) => Some(JwtVerifier::read(
                path,
                self.jwt_algorithm,
                &self.jwt_username_claim,
            )?),
            None => None,
        };
        Ok(Credentials { passwords, jwt })
    }
}

/// The authenticator the connections share.
#[derive(Debug)]
pub struct Auth {
    sources: Sources,
    enabled: bool,
    allow_anonymous: bool,
    credentials: RwLock<Arc<Credentials>>,
    throttle: Throttle,
    /// Bounds the argon2 verifications running at once (each takes its hash's memory,
    /// 19 MiB by default), so that a flood of logins cannot exhaust memory.
    verifying: Semaphore,
    /// A refusal waits no longer than a client may take to connect.
    max_delay: Duration,
}

impl Auth {
    /// Reads the password file and the JWT key that `config` names; the error is one
    /// line naming the file (and, for the password file, the line).
    pub fn load(config: &Config) -> Result<Auth, String> {
        let sources = Sources {
            password_file: config.password_file.clone(),
            jwt_key_file: config.jwt_key_file.clone(),
            jwt_algorithm: config.jwt_algorithm,
            jwt_username_claim: config.jwt_username_claim.clone(),
        };
        let credentials = sources.read()?;
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Auth {
            sources,
            enabled: config.auth_enabled(),
            allow_anonymous: config.allows_anonymous(),
            credentials: RwLock::new(Arc::new(credentials)),
            throttle: Throttle::new(throttle::MAX_ADDRESSES),
            verifying: Semaphore::new(parallel),
            max_delay: config.connect_timeout(),
        })
    }

    /// No authentication: every client is accepted under the username it sent.
    pub fn disabled() -> Auth {
        Auth::load(&Config::default()).expect("the defaults read no file")
    }

    /// Reads the files again. On error the previous users and key stay in force.
    pub fn reload(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let fresh = self.sources.read()?;
        let users = fresh.passwords.as_ref().map(PasswordTable::len);
        *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        tracing::info!(users, "reloaded users and keys");
        Ok(())
    }

    /// Authenticates a CONNECT from `peer`. A refusal from an address that keeps
    /// failing is returned only after its throttle delay (an async sleep of this
    /// connection alone, at most the connect timeout).
    pub async fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
        peer: IpAddr,
    ) -> Result<Identity, Refusal> {
        if !self.enabled {
            return Ok(Identity {
                username: username.map(str::to_string),
            });
        }
        let verdict = match password {
            // The username of a client without a password is not vouched for: the
            // access rules must not see it.
            None if self.allow_anonymous => return Ok(Identity { username: None }),
            None => Err(Refusal {
                code: reason::NOT_AUTHORIZED,
                why: "no password, and allow_anonymous is false",
            }),
            Some(password) => self.verify(username, password).await,
        };
        match verdict {
            Ok(user) => {
                tracing::debug!(%client_id, username = %user, "authenticated");
                Ok(Identity {
                    username: Some(user),
                })
            }
            Err(refusal) => {
                let delay = self.throttle.fail(peer, Instant::now()).min(self.max_delay);
                tokio::time::sleep(delay).await;
                Err(refusal)
            }
        }
    }

    /// The username that `password` proves, trying the password file first.
    async fn verify(&self, username: Option<&str>, password: &[u8]) -> Result<String, Refusal> {
        let credentials = self
            .credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let stored = match (username, &credentials.passwords) {
            (Some(user), Some(table)) => table.get(user),
            _ => None,
        };
        if let (Some(user), Some(phc)) = (username, stored) {
            return match self.argon2(Some(phc), password).await {
                true => Ok(user.to_string()),
                false => Err(Refusal::bad_credentials("wrong password")),
            };
        }
        let from_token = match &credentials.jwt {
            Some(jwt) => std::str::from_utf8(password)
                .map_err(|_| "password is not a token (not UTF-8)".to_string())
                .and_then(|token| jwt.verify(token)),
            None => Err("unknown user".to_string()),
        };
        match from_token {
            Ok(subject) if username.is_none_or(|u| u == subject) => Ok(subject),
            Ok(_) => Err(Refusal::bad_credentials(
                "username differs from the token's",
            )),
            Err(why) => {
                tracing::debug!(username, %why, "token or user refused");
                if credentials.passwords.is_some() {
                    // Unknown users take as long to refuse as known ones.
                    self.argon2(None, password).await;
                }
                Err(Refusal::bad_credentials("unknown user or invalid token"))
            }
        }
    }

    /// Checks `password` against `phc` (or against nothing, only to spend the time) on
    /// the blocking pool, a bounded number at a time.
    async fn argon2(&self, phc: Option<Arc<str>>, password: &[u8]) -> bool {
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let password = password.to_vec();
        let checked = tokio::task::spawn_blocking(move || match phc {
            Some(phc) => password::verify(&phc, &password),
            None => {
                password::verify_nobody(&password);
                false
            }
        });
        checked.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn localhost() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    fn auth_with(
        passwords: &str,
        allow_anonymous: Option<bool>,
        jwt_secret: Option<&str>,
    ) -> (Auth, tempfile_dir::Dir) {
        let dir = tempfile_dir::Dir::new();
        let mut config = Config::default();
        let path = dir.0.join("passwords");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(passwords.as_bytes())
            .unwrap();
        config.password_file = Some(path);
        if let Some(secret) = jwt_secret {
            let key = dir.0.join("jwt.key");
            std::fs::write(&key, secret).unwrap();
            config.jwt_key_file = Some(key);
        }
        config.allow_anonymous = allow_anonymous;
        (Auth::load(&config).unwrap(), dir)
    }

    /// A temporary directory without a dev-dependency for it.
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let path =
                    std::env::temp_dir().join(format!("raftmq-auth-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[tokio::test]
    async fn passwords_anonymous_and_refusal_codes() {
        let hash = hash_password(b"pw").unwrap();
        let (auth, _dir) = auth_with(&format!("alice:{hash}\n"), None, None);
        let check = |user: Option<&'static str>, pw: Option<&'static [u8]>| {
            auth.check("c", user, pw, localhost())
        };
        assert_eq!(
            check(Some("alice"), Some(b"pw"))
                .await
                .unwrap()
                .username
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            check(Some("alice"), Some(b"no")).await.unwrap_err().code,
            0x86
        );
        assert_eq!(
            check(Some("bob"), Some(b"pw")).await.unwrap_err().code,
            0x86
        );
        assert_eq!(check(None, None).await.unwrap_err().code, 0x87);
        assert_eq!(check(Some("alice"), None).await.unwrap_err().code, 0x87);
    }

    #[tokio::test]
    async fn anonymous_clients_lose_their_claimed_name() {
        let (auth, _dir) = auth_with("", Some(true), None);
        let who = auth.check("c", Some("admin"), None, localhost()).await;
        assert_eq!(who.unwrap().username, None);
        let off = Auth::disabled();
        let who = off.check("c", Some("admin"), None, localhost()).await;
        assert_eq!(who.unwrap().username.as_deref(), Some("admin"));
    }

    #[tokio::test]
    async fn tokens_for_users_not_in_the_file() {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let claims = serde_json::json!({"sub": "dev-1", "exp": exp});
        let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k")).unwrap();
        let hash = hash_password(b"pw").unwrap();
        let (auth, _dir) = auth_with(&format!("alice:{hash}\n"), None, Some("k\n"));
        let ok = auth
            .check("c", None, Some(token.as_bytes()), localhost())
            .await;
        assert_eq!(ok.unwrap().username.as_deref(), Some("dev-1"));
        let same = auth
            .check("c", Some("dev-1"), Some(token.as_bytes()), localhost())
            .await;
        assert!(same.is_ok());
        let other = auth
            .check("c", Some("dev-2"), Some(token.as_bytes()), localhost())
            .await;
        assert_eq!(other.unwrap_err().code, 0x86);
        // A file user is checked against the file only, not as a token.
        let alice = auth
            .check("c", Some("alice"), Some(token.as_bytes()), localhost())
            .await;
        assert_eq!(alice.unwrap_err().code, 0x86);
    }

    #[tokio::test]
    async fn a_bad_reload_keeps_the_old_users() {
        let hash = hash_password(b"pw").unwrap();
        let (auth, dir) = auth_with(&format!("alice:{hash}\n"), None, None);
        std::fs::write(dir.0.join("passwords"), format!("alice:{hash}\nbob\n")).unwrap();
        let err = auth.reload().unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(auth
            .check("c", Some("alice"), Some(b"pw"), localhost())
            .await
            .is_ok());
        std::fs::write(dir.0.join("passwords"), format!("bob:{hash}\n")).unwrap();
        auth.reload().unwrap();
        assert!(auth
            .check("c", Some("bob"), Some(b"pw"), localhost())
            .await
            .is_ok());
        assert!(auth
            .check("c", Some("alice"), Some(b"pw"), localhost())
            .await
            .is_err());
    }
}
