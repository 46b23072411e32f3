//! The one rule for files that hold a secret: hook HMAC keys, builder and
//! jig tokens. Surrounding ASCII white space (spaces, tabs, line breaks, as
//! left by `echo` or an editor) is not part of the secret; a file with nothing
//! else is an error, never an empty key.
//!
//! sai-core does no I/O: the daemons read the file and hand the outcome to
//! [`secret_from_file`] (`secret_from_file(path, std::fs::read(path))`), so
//! every daemon applies the same rule and reports the same errors.

use std::path::{Path, PathBuf};

/// Why a secret file gave no secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds only white space.
    #[error("secret file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A token file that is not UTF-8 text.
    #[error("secret file {path} is not UTF-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
}

/// The secret in the bytes of a secret file: surrounding ASCII white space
/// trimmed. `None` when nothing is left.
pub fn secret_from_bytes(bytes: &[u8]) -> Option<&[u8]> {
    Some(bytes.trim_ascii()).filter(|s| !s.is_empty())
}

/// The secret in file `path`, given the outcome of reading it
/// (`std::fs::read(path)`): [`secret_from_bytes`], with errors naming the file.
pub fn secret_from_file(
    path: &Path,
    contents: std::io::Result<Vec<u8>>,
) -> Result<Vec<u8>, SecretError> {
    let bytes = contents.map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    secret_from_bytes(&bytes)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| SecretError::Empty {
            path: path.to_path_buf(),
        })
}

/// [`secret_from_file`] for a secret that is text, such as a token.
pub fn secret_text_from_file(
    path: &Path,
    contents: std::io::Result<Vec<u8>>,
) -> Result<String, SecretError> {
    String::from_utf8(secret_from_file(path, contents)?).map_err(|_| SecretError::NotText {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_white_space_is_not_part_of_the_secret() {
        assert_eq!(secret_from_bytes(b"k3y\n"), Some(&b"k3y"[..]));
        assert_eq!(secret_from_bytes(b"k3y\r\n\n"), Some(&b"k3y"[..]));
        assert_eq!(secret_from_bytes(b" \tk 3y \n"), Some(&b"k 3y"[..]));
        assert_eq!(secret_from_bytes(b"\xffk\n"), Some(&b"\xffk"[..]));
        assert_eq!(secret_from_bytes(b" \r\n\t"), None);
        assert_eq!(secret_from_bytes(b""), None);
    }

    #[test]
    fn errors_name_the_file() {
        let path = Path::new("/etc/sai/key");
        let e = secret_from_file(path, Ok(b"\n".to_vec())).unwrap_err();
        assert_eq!(e.to_string(), "secret file /etc/sai/key is empty");
        let e = secret_from_file(path, Err(std::io::ErrorKind::NotFound.into())).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read secret file /etc/sai/key: "),
            "{e}"
        );
        let e = secret_text_from_file(path, Ok(b"\xff\n".to_vec())).unwrap_err();
        assert_eq!(e.to_string(), "secret file /etc/sai/key is not UTF-8 text");
        let token = secret_text_from_file(path, Ok(b"tok\n".to_vec())).unwrap();
        assert_eq!(token, "tok");
    }
}
