//! The password file: one `user:<PHC string>` line per user, the hash an argon2 one
//! (`user:$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), as `raftmq passwd` writes it.
//! Lines that are blank or start with `#` are ignored. Hashing and checking are slow
//! on purpose (argon2's memory-hard cost): callers run them off the async threads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Users and their password hashes, as read from the file.
#[derive(Default)]
pub struct PasswordTable {
    users: HashMap<String, Arc<str>>,
}

/// Shows how many users, not their hashes (which must not reach a log).
impl std::fmt::Debug for PasswordTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordTable")
            .field("users", &self.users.len())
            .finish()
    }
}

impl PasswordTable {
    /// Reads and checks the whole file; the error names the file and the line.
    pub fn read(path: &Path) -> Result<PasswordTable, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("password_file {}: {e}", path.display()))?;
        PasswordTable::parse(&text)
            .map_err(|(line, why)| format!("password_file {}: line {line}: {why}", path.display()))
    }

    /// The table, or the first bad line (numbered from 1) and what is wrong with it.
    pub fn parse(text: &str) -> Result<PasswordTable, (usize, String)> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, phc) = parse_line(line).map_err(|why| (i + 1, why))?;
            if users.insert(user.to_string(), phc.into()).is_some() {
                return Err((i + 1, format!("user {user:?} appears twice")));
            }
        }
        Ok(PasswordTable { users })
    }

    /// The stored hash of `user`, if the file has that user.
    pub fn get(&self, user: &str) -> Option<Arc<str>> {
        self.users.get(user).cloned()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// `user:hash`, with a valid user name and an argon2 PHC string.
fn parse_line(line: &str) -> Result<(&str, &str), String> {
    let (user, phc) = line
        .split_once(':')
        .ok_or("expected user:hash (no ':' found)")?;
    check_username(user)?;
    let hash = PasswordHash::new(phc).map_err(|e| format!("hash of {user:?}: {e}"))?;
    if !matches!(hash.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d") {
        return Err(format!(
            "hash of {user:?}: {} is not an argon2 hash",
            hash.algorithm
        ));
    }
    argon2::Params::try_from(&hash).map_err(|e| format!("hash of {user:?}: {e}"))?;
    if hash.hash.is_none() || hash.salt.is_none() {
        return Err(format!("hash of {user:?}: no salt or no hash"));
    }
    Ok((user, phc))
}

/// A name the file can hold: not empty, no ':' (the separator), no whitespace or
/// control characters (which would not survive a line-based file).
pub fn check_username(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if user.contains(|c: char| c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "user name {user:?} has ':', whitespace or control characters"
        ));
    }
    Ok(())
}

/// A new argon2id hash of `password` with a random salt and the crate's default cost
/// (OWASP's recommendation: 19 MiB, 2 passes).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// Whether `password` matches `phc` (a hash accepted by `parse`). Constant-time in the
/// password; blocks for the hash's cost.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification, for users that are not in the file, so that
/// the time to refusal does not tell which users exist.
pub fn verify_nobody(password: &[u8]) {
    static NOBODY: OnceLock<String> = OnceLock::new();
    let phc = NOBODY.get_or_init(|| hash_password(b"nobody").unwrap_or_default());
    let _ = verify(phc, password);
}

/// `text` (a password file) with `user`'s line replaced by `user:phc`, or that line
/// appended; comments, blank lines and other users are kept as they were.
pub fn set_user(text: &str, user: &str, phc: &str) -> String {
    let entry = format!("{user}:{phc}");
    let mut out = String::with_capacity(text.len() + entry.len() + 1);
    let mut replaced = false;
    for line in text.lines() {
        let ours = line.trim().split_once(':').is_some_and(|(u, _)| u == user)
            && !line.trim_start().starts_with('#');
        if ours && !replaced {
            out.push_str(&entry);
            replaced = true;
        } else if !ours {
            out.push_str(line);
        } else {
            continue;
        }
        out.push('\n');
    }
    if !replaced {
        out.push_str(&entry);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cheap hash (8 KiB, 1 pass) so that the tests stay fast.
    fn cheap_hash(password: &str) -> String {
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        argon
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn parses_users_comments_and_blank_lines() {
        let text = format!(
            "# users\n\nalice:{}\n  # indented comment\nbob:{}\n",
            cheap_hash("a"),
            cheap_hash("b")
        );
        let table = PasswordTable::parse(&text).unwrap();
        assert_eq!(table.len(), 2);
        assert!(verify(&table.get("alice").unwrap(), b"a"));
        assert!(!verify(&table.get("alice").unwrap(), b"b"));
        assert!(verify(&table.get("bob").unwrap(), b"b"));
        assert!(table.get("carol").is_none());
    }

    #[test]
    fn bad_lines_are_numbered() {
        let good = cheap_hash("x");
        let cases = [
            ("alice\n".to_string(), 1, "no ':'"),
            (format!("a:{good}\n\n:{good}\n"), 3, "empty user name"),
            ("# c\nbob:notahash\n".to_string(), 2, "hash of \"bob\""),
            (format!("a b:{good}\n"), 1, "whitespace"),
            (format!("a:{good}\na:{good}\n"), 2, "appears twice"),
            (
                "c:$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n".to_string(),
                1,
                "not an argon2 hash",
            ),
            (
                "c:$argon2id$v=19$m=19456,t=2,p=1\n".to_string(),
                1,
                "no salt or no hash",
            ),
        ];
        for (text, line, why) in cases {
            let (got_line, got_why) = PasswordTable::parse(&text).unwrap_err();
            assert_eq!(got_line, line, "{text:?}: {got_why}");
            assert!(got_why.contains(why), "{text:?}: {got_why}");
        }
    }

    #[test]
    fn read_names_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("raftmq-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwords");
        std::fs::write(&path, "# ok\nbroken line\n").unwrap();
        let err = PasswordTable::read(&path).unwrap_err();
        assert!(
            err.starts_with(&format!("password_file {}: line 2: ", path.display())),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn default_hash_is_argon2id_and_verifies() {
        let phc = hash_password(b"secret").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify(&phc, b"secret"));
        assert!(!verify(&phc, b"Secret"));
        assert_ne!(phc, hash_password(b"secret").unwrap(), "salted");
    }

    #[test]
    fn set_user_replaces_or_appends() {
        let text = "# users\nalice:old\n\nbob:keep\n";
        assert_eq!(
            set_user(text, "alice", "new"),
            "# users\nalice:new\n\nbob:keep\n"
        );
        assert_eq!(
            set_user(text, "carol", "c"),
            "# users\nalice:old\n\nbob:keep\ncarol:c\n"
        );
        assert_eq!(set_user("", "a", "h"), "a:h\n");
        // A commented-out line for the user is left alone.
        assert_eq!(set_user("#alice:x\n", "alice", "h"), "#alice:x\nalice:h\n");
    }
}
