//! `raftmq passwd FILE USER`: adds a user to a password file or changes their password.
//! The password never comes from the command line (where `ps` and shell histories would
//! show it): from the terminal without echo, or from stdin's first line in scripts.
//! The file is replaced atomically (a temporary file beside it, then a rename), so a
//! broker reloading it on SIGHUP sees the old file or the new one, never half of one.

use std::fs;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use broker_core::auth::password::{check_username, hash_password, set_user, PasswordTable};

use crate::{fail, EXIT_FAILURE};

pub fn run(file: &Path, user: &str) -> ExitCode {
    match execute(file, user) {
        Ok(added) => {
            let what = if added {
                "added"
            } else {
                "changed the password of"
            };
            eprintln!("raftmq: {what} {user} in {}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_FAILURE, e),
    }
}

/// Whether the user is new.
fn execute(file: &Path, user: &str) -> Result<bool, String> {
    check_username(user)?;
    let text = match fs::read_to_string(file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    // A file the broker would refuse is not edited: the error says where it is broken.
    let table = match &text {
        Some(text) => PasswordTable::parse(text)
            .map_err(|(line, why)| format!("{}: line {line}: {why}", file.display()))?,
        None => PasswordTable::default(),
    };
    let password = read_password()?;
    let phc = hash_password(password.as_bytes())?;
    let updated = set_user(text.as_deref().unwrap_or(""), user, &phc);
    replace(file, updated.as_bytes(), text.is_none())
        .map_err(|e| format!("writing {}: {e}", file.display()))?;
    Ok(table.get(user).is_none())
}

fn read_password() -> Result<String, String> {
    let stdin = io::stdin();
    let password = if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}

/// Writes `bytes` to a temporary file in `file`'s directory, flushes it to disk and
/// renames it over `file`. A new file gets mode 0600; an existing one keeps its mode.
fn replace(file: &Path, bytes: &[u8], new: bool) -> io::Result<()> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let mode = match new {
                true => 0o600,
                false => fs::metadata(file)?.permissions().mode() & 0o7777,
            };
            options.mode(mode);
            let mut out = options.open(&tmp)?;
            // The umask may have narrowed the mode; an existing file's is kept exactly.
            out.set_permissions(fs::Permissions::from_mode(mode))?;
            out.write_all(bytes)?;
            out.sync_all()?;
        }
        #[cfg(not(unix))]
        {
            let _ = new;
            let mut out = options.open(&tmp)?;
            out.write_all(bytes)?;
            out.sync_all()?;
        }
        fs::rename(&tmp, file)?;
        // The rename itself is durable once the directory is.
        fs::File::open(dir).and_then(|d| d.sync_all()).or(Ok(()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_creates_0600_and_keeps_an_existing_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwords");
        replace(&file, b"a\n", true).unwrap();
        let mode = |f: &Path| fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read_to_string(&file).unwrap(), "a\n");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        replace(&file, b"b\n", false).unwrap();
        assert_eq!(mode(&file), 0o640);
        assert_eq!(fs::read_to_string(&file).unwrap(), "b\n");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }
}
