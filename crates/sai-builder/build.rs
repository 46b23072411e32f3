//! Optimised Linux builds of the `sai-builder` binary are linked with
//! `link/hot.ld`: the code a builder runs goes first, together, so that an
//! idle builder keeps few pages of its code resident (made by
//! scripts/bench/hot-code.sh; see CONTRIBUTING.md, "Static binaries").

fn main() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("link/hot.ld");
    println!("cargo::rerun-if-changed={}", script.display());
    let optimised = std::env::var("PROFILE").as_deref() == Ok("release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if optimised && linux {
        println!(
            "cargo::rustc-link-arg-bin=sai-builder=-Wl,-T,{}",
            script.display()
        );
    }
}
