//! Assets embedded in the binary, served under `/assets/` with a content
//! hash in their URL so they can be cached forever.

use std::sync::OnceLock;

use sha2::Digest;

/// One embedded file.
pub struct Asset {
    /// File name.
    pub name: &'static str,
    /// Content type.
    pub content_type: &'static str,
    /// Bytes.
    pub body: Vec<u8>,
    /// Short content hash.
    pub hash: String,
}

fn all() -> &'static [Asset] {
    static ASSETS: OnceLock<Vec<Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let css = format!(
            "{}\n{}",
            include_str!("../assets/sai.css"),
            crate::ansi::palette_css()
        );
        let files: Vec<(&'static str, &'static str, Vec<u8>)> = vec![
            ("sai.css", "text/css; charset=utf-8", css.into_bytes()),
            (
                "app.js",
                "text/javascript; charset=utf-8",
                include_bytes!("../assets/app.js").to_vec(),
            ),
            (
                "logview.js",
                "text/javascript; charset=utf-8",
                include_bytes!("../assets/logview.js").to_vec(),
            ),
            (
                "favicon.svg",
                "image/svg+xml",
                include_bytes!("../assets/favicon.svg").to_vec(),
            ),
        ];
        files
            .into_iter()
            .map(|(name, content_type, body)| Asset {
                name,
                content_type,
                hash: hex::encode(&sha2::Sha256::digest(&body)[..6]),
                body,
            })
            .collect()
    })
}

/// The asset called `name`.
pub fn get(name: &str) -> Option<&'static Asset> {
    all().iter().find(|a| a.name == name)
}

/// URL of an asset, with its hash.
pub fn url(name: &str) -> String {
    match get(name) {
        Some(a) => format!("/assets/{}?v={}", a.name, a.hash),
        None => format!("/assets/{name}"),
    }
}
