//! The device API's bearer tokens (`[http] api_tokens_file`), each optionally scoped to
//! some extensions.
//!
//! The file has one token per line, then the extensions it may manage; a pattern ending
//! in `*` covers every extension starting with what comes before it, and no pattern (or
//! `*`) covers them all. A word starting with `#` starts a comment.
//!
//! ```text
//! # tenant A's backend manages the 2xx extensions, the front desk two phones
//! 4c9f0e6b2d1a8f7e5c3b9a0d1e2f3a4b5c6d7e8f  2*
//! 8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b  101 102
//! ```
//!
//! Only a SHA-256 digest of each token is kept in memory; a presented token is compared
//! with every one of them in constant time.

use std::fmt;
use std::path::Path;

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 32;

/// The tokens of the file.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiTokens {
    tokens: Vec<Scoped>,
}

#[derive(Clone, PartialEq, Eq)]
struct Scoped {
    digest: [u8; 32],
    /// `None`: every extension.
    extensions: Option<Vec<String>>,
    /// The line it is on, for logs (the token itself is never shown).
    line: usize,
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiTokens({} token(s))", self.tokens.len())
    }
}

/// Who a presented token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No token, or one that is not in the file.
    Unknown,
    /// A token of the file: its line, and the extensions it may manage (`None`: all).
    Known {
        /// The token's line in the file.
        line: usize,
        /// Its extension patterns.
        extensions: Option<Vec<String>>,
    },
}

impl Caller {
    /// Whether this caller may manage `extension`'s devices.
    pub fn may_manage(&self, extension: &str) -> bool {
        match self {
            Caller::Unknown => false,
            Caller::Known {
                extensions: None, ..
            } => true,
            Caller::Known {
                extensions: Some(patterns),
                ..
            } => patterns.iter().any(|p| covers(p, extension)),
        }
    }
}

/// Whether `pattern` (`101`, or `2*`) covers `extension`.
fn covers(pattern: &str, extension: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => extension.starts_with(prefix),
        None => pattern == extension,
    }
}

fn digest(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl ApiTokens {
    /// Reads the file; it must be readable by its owner only (it holds credentials).
    /// Errors name the file and line, never a token.
    pub fn read(path: &Path) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} holds the device API's tokens and has mode {mode:04o}; only its owner may read it: chown pushwake {} && chmod 0600 {}",
                path.display(),
                path.display(),
                path.display()
            ));
        }
        Self::parse(&text)
            .map_err(|(line, message)| format!("{}:{line}: {message}", path.display()))
    }

    /// Reads the file's text; an error is its line and what is wrong.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut tokens: Vec<Scoped> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let mut words = raw.split_whitespace().take_while(|w| !w.starts_with('#'));
            let Some(token) = words.next() else {
                continue;
            };
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err((
                    line,
                    format!(
                        "a token is at least {MIN_TOKEN_LEN} printable characters (this one has {}), e.g. from `openssl rand -hex 32`",
                        token.chars().count()
                    ),
                ));
            }
            let patterns: Vec<String> = words.map(str::to_owned).collect();
            if let Some(bad) = patterns.iter().find(|p| {
                p.is_empty()
                    || p[..p.len() - usize::from(p.ends_with('*'))].contains('*')
                    || !p.bytes().all(|b| b.is_ascii_graphic())
            }) {
                return Err((
                    line,
                    format!("`{bad}` is not an extension or a prefix ending in `*`"),
                ));
            }
            let digest = digest(token);
            if let Some(earlier) = tokens.iter().find(|t| t.digest == digest) {
                return Err((line, format!("the same token as line {}", earlier.line)));
            }
            let extensions =
                (!patterns.is_empty() && !patterns.iter().any(|p| p == "*")).then_some(patterns);
            tokens.push(Scoped {
                digest,
                extensions,
                line,
            });
        }
        if tokens.is_empty() {
            return Err((1, "the file holds no token".into()));
        }
        Ok(Self { tokens })
    }

    /// Who `presented` is. Every configured token is compared, in constant time, so the
    /// time taken says nothing about which one (nearly) matched.
    pub fn caller(&self, presented: Option<&str>) -> Caller {
        let Some(presented) = presented else {
            return Caller::Unknown;
        };
        let presented = digest(presented);
        let mut found = Caller::Unknown;
        for token in &self.tokens {
            let same = aws_lc_rs::constant_time::verify_slices_are_equal(&token.digest, &presented)
                .is_ok();
            if same {
                found = Caller::Known {
                    line: token.line,
                    extensions: token.extensions.clone(),
                };
            }
        }
        found
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there is none (never, once read).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "4c9f0e6b2d1a8f7e5c3b9a0d1e2f3a4b5c6d7e8f";
    const B: &str = "8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b";
    const C: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_are_scoped_to_extensions_and_prefixes() {
        let tokens = ApiTokens::parse(&format!(
            "# backends\n{A}  2*   # tenant A\n\n{B} 101 102\n{C}#x\n"
        ))
        .unwrap();
        assert_eq!(tokens.len(), 3);
        let a = tokens.caller(Some(A));
        assert!(a.may_manage("200") && a.may_manage("2999") && !a.may_manage("101"));
        let b = tokens.caller(Some(B));
        assert!(b.may_manage("101") && b.may_manage("102") && !b.may_manage("1010"));
        assert!(tokens
            .caller(Some(&format!("{C}#x")))
            .may_manage("anything"));
        assert_eq!(tokens.caller(Some("nope")), Caller::Unknown);
        assert_eq!(tokens.caller(None), Caller::Unknown);
        assert!(!Caller::Unknown.may_manage("101"));
        assert!(!format!("{tokens:?}").contains(&A[..8]));
        let all = ApiTokens::parse(&format!("{A} *\n")).unwrap();
        assert!(all.caller(Some(A)).may_manage("555"));
    }

    #[test]
    fn a_bad_file_is_refused_by_line_without_the_token() {
        for (text, line, needle) in [
            ("short-token 101\n".to_owned(), 1, "at least 32"),
            (format!("{A}\n{A} 101\n"), 2, "same token as line 1"),
            (format!("{A} 1*0\n"), 1, "`1*0` is not an extension"),
            ("# nothing\n\n".to_owned(), 1, "no token"),
        ] {
            let (at, message) = ApiTokens::parse(&text).unwrap_err();
            assert_eq!(at, line, "{text}");
            assert!(message.contains(needle), "{message}");
            assert!(
                !message.contains(&A[..12]) && !message.contains("short-token"),
                "{message}"
            );
        }
    }

    #[test]
    fn the_file_must_be_its_owner_s_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-tokens");
        std::fs::write(&path, format!("{A}\n")).unwrap();
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = ApiTokens::read(&path).unwrap_err();
            assert!(
                e.contains("only its owner may read it") && e.contains(&format!("{mode:04o}")),
                "{e}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ApiTokens::read(&path).unwrap().len(), 1);
        std::fs::write(&path, "short\n").unwrap();
        let e = ApiTokens::read(&path).unwrap_err();
        assert!(e.starts_with(&format!("{}:1: ", path.display())), "{e}");
    }
}
